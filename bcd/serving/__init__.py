"""bcd.serving."""
