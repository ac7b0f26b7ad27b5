"""Streaming services: the trade feed and the Faust app with its agents."""
