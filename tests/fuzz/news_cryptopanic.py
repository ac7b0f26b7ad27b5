"""Atheris target: CryptoPanic posts API pages (v1 and developer v2 shapes) through parse_cryptopanic.

Run: `.venv/bin/python tests/fuzz/news_cryptopanic.py [libFuzzer flags]` (see _atheris.py); the invariant is
`invariants.cryptopanic_page`.
"""

from __future__ import annotations

import atheris
from _atheris import run

with atheris.instrument_imports(include=["cryptopredict", "grpc_server"]):
    from invariants import cryptopanic_page

if __name__ == "__main__":
    run("news_cryptopanic", cryptopanic_page)
