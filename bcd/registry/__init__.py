"""bcd.registry."""
