"""Atheris target: RSS 2.0 and Atom documents through parse_feed.

Run: `.venv/bin/python tests/fuzz/news_feed.py [libFuzzer flags]` (see _atheris.py); the invariant is
`invariants.news_feed`.
"""

from __future__ import annotations

import atheris
from _atheris import run

with atheris.instrument_imports(include=["cryptopredict", "grpc_server"]):
    from invariants import news_feed

if __name__ == "__main__":
    run("news_feed", news_feed)
