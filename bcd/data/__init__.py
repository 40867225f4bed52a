"""bcd.data."""
