"""Temporal activities: all I/O, thin wrappers over cryptopredict."""
