"""bcd.tuning."""
