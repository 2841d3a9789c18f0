"""Application services: the loops that move events between the adapters and the core."""
