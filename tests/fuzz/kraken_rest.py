"""Atheris target: Kraken REST response bodies through the client's decoding and the Trades/OHLC parsers.

Run: `.venv/bin/python tests/fuzz/kraken_rest.py [libFuzzer flags]` (see _atheris.py); the invariant is
`invariants.rest_page`.
"""

from __future__ import annotations

import atheris
from _atheris import run

with atheris.instrument_imports(include=["cryptopredict", "grpc_server"]):
    from invariants import rest_page

if __name__ == "__main__":
    run("kraken_rest", rest_page)
