"""bcd.slides."""
