"""bcd.testing."""
