"""bcd.algorithms."""
