"""Atheris target: Kraken WebSocket v2 messages through the feed's handling (KrakenTradeClient._handle).

Run: `.venv/bin/python tests/fuzz/kraken_ws.py [libFuzzer flags]` (see _atheris.py); the invariant is
`invariants.exchange_message`.
"""

from __future__ import annotations

import atheris
from _atheris import run

with atheris.instrument_imports(include=["cryptopredict", "grpc_server"]):
    from invariants import exchange_message

if __name__ == "__main__":
    run("kraken_ws", exchange_message)
