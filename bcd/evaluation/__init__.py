"""bcd.evaluation."""
