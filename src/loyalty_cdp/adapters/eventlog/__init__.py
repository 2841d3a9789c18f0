"""Event log implementations behind the contract in :mod:`.base`."""
