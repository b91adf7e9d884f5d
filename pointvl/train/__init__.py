"""pointvl.train."""
