"""pointvl.viz."""
