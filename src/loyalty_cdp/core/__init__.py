"""The pure core: identity, profile fold, loyalty rules, signals and decisioning. No I/O here."""
