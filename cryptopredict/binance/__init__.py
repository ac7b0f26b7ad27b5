"""Binance spot public trade streams and REST market data: parsing for the feed, building for the replay exchange."""
