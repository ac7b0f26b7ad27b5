"""Stand-ins for the outside world, for the demo, tests and benchmarks: no domain code imports them.

- `exchange`: the replay exchange, Kraken's offline twin (WebSocket v2 and REST on one port);
  `binance` and `coinbase`: the same replay speaking Binance spot and Coinbase Advanced Trade;
  `REPLAY_EXCHANGES` names each venue's.
- `news`: a local CryptoPanic and RSS/Atom server with sample news.
- `markets`: seeded synthetic candle histories.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptopredict.simulators.exchange import ReplayExchange

# The replay exchange of each venue, as "module:class", imported only when asked for (it pulls in websockets).
REPLAY_EXCHANGES: dict[str, str] = {
    "kraken": "cryptopredict.simulators.exchange:ReplayExchange",
    "binance": "cryptopredict.simulators.binance:BinanceReplayExchange",
    "coinbase": "cryptopredict.simulators.coinbase:CoinbaseReplayExchange",
}


def replay_exchange(venue: str) -> type[ReplayExchange]:
    """The replay exchange class that speaks `venue`'s protocol."""
    if venue not in REPLAY_EXCHANGES:
        raise ValueError(f"no replay exchange speaks {venue!r}; one of {sorted(REPLAY_EXCHANGES)}")
    module, _, name = REPLAY_EXCHANGES[venue].partition(":")
    exchange: type[ReplayExchange] = getattr(importlib.import_module(module), name)
    return exchange
