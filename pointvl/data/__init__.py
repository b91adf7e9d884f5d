"""pointvl.data."""
