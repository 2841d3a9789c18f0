"""Profile stores: the processor's state (identity graph, profiles) with its log offset."""
