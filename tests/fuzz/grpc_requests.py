"""Atheris target: gRPC requests (first byte: the RPC; the rest: its encoded request) through the servicer's validation.

Run: `.venv/bin/python tests/fuzz/grpc_requests.py [libFuzzer flags]` (see _atheris.py); the invariant is
`grpc_invariants.grpc_request`.
"""

from __future__ import annotations

import atheris
from _atheris import run

with atheris.instrument_imports(include=["cryptopredict", "grpc_server"]):
    from grpc_invariants import grpc_request

if __name__ == "__main__":
    run("grpc_requests", grpc_request)
