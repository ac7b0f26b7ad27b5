"""Coinbase Advanced Trade: public market-data WebSocket (market_trades, heartbeats, status) and REST."""
