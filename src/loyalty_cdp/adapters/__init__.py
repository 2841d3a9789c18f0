"""Adapters: storage engines, buses and destinations, each behind an interface the core's users define."""
