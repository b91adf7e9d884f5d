"""pointvl.model."""
