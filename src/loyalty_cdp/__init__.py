"""loyalty-cdp: a customer data platform for loyalty programs."""

__version__ = "0.1.0"
