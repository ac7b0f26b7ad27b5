"""Shared core of the crypto forecasting mesh: settings, models, features, store, ML and the CLI."""
