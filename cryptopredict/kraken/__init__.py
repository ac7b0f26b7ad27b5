"""Kraken WebSocket v2 protocol: message parsing for the feed, message building for the replay exchange."""
