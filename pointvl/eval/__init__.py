"""pointvl.eval."""
