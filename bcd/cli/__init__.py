"""The ``bcd`` command line interface."""
