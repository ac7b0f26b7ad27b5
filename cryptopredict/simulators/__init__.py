"""Stand-ins for the outside world, for the demo, tests and benchmarks: no domain code imports them.

- `exchange`: the replay exchange, Kraken's offline twin (WebSocket v2 and REST on one port).
- `news`: a local CryptoPanic and RSS/Atom server with sample news.
- `markets`: seeded synthetic candle histories.
"""
