"""bcd.jobs."""
