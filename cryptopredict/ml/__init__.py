"""Datasets, models and evaluation: pure code that the Temporal activities call."""
