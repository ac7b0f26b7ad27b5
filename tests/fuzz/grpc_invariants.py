"""The invariant of the gRPC target (grpc_requests.py, test_properties.py): whatever request arrives, a
servicer method answers it or aborts with a client error code (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
NOT_FOUND) and a bounded message; never another exception. The methods run in-process with a context
that records the abort, over an in-memory hub and empty backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from invariants import NOW, PAIRS

from cryptopredict.ml.live import LiveFigures
from cryptopredict.ml.registry import AliasedVersions
from cryptopredict.models.ml import Prediction, QuantilePrice
from cryptopredict.topics import market_key
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.server import PredictionService, StreamSlots, Targets

# What a request may be refused with: the client's mistake, its limits, or nothing to answer yet.
CLIENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}
)
# A status message stays short whatever the client sent (it travels in a header).
MAX_DETAILS = 1024
# Every pair on Kraken and on Coinbase (market keys, as settings.pairs gives them).
MARKETS = (*PAIRS, *(market_key("coinbase", pair) for pair in PAIRS))
TARGETS = Targets(MARKETS, {60: (1, 5), 300: (1,)}, (0.1, 0.5, 0.9), ("price",), max_values=20)


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


class RecordingContext:
    """The part of grpc.aio.ServicerContext the handlers use; abort raises, as grpc's does."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)

    async def send_initial_metadata(self, metadata: object) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


class NoBackends:
    """Store and registry with nothing in them: validation is what is under test, not the lookups."""

    def ledger(self, pair: str, interval_s: int, since: datetime) -> list[LiveFigures]:
        return []

    def models(self, names: list[str]) -> list[AliasedVersions | None]:
        return [None] * len(names)


def _prediction(pair: str, interval_s: int, horizon_s: int, exchange: str = "kraken") -> Prediction:
    return Prediction(
        exchange=exchange,
        pair=pair,
        interval_s=interval_s,
        horizon_s=horizon_s,
        made_at=NOW,
        feature_time=NOW,
        target_time=NOW + timedelta(seconds=horizon_s),
        last_price=100.0,
        predicted_price=101.0,
        quantiles=[QuantilePrice(level=q, price=90.0 + 10 * i) for i, q in enumerate((0.1, 0.5, 0.9))],
        model_name="fuzz",
        model_version="1",
    )


_LOOP: asyncio.AbstractEventLoop | None = None
METHODS = ("StreamPredictions", "GetLatestPrediction", "GetLedger", "ListModels", "GetModel")


def _service() -> PredictionService:
    hub = PredictionHub()
    hub.publish(_prediction("BTC/USD", 60, 60))
    hub.publish(_prediction("BTC/USD", 60, 60, exchange="coinbase"))
    # Closed: an accepted stream delivers the snapshot and ends instead of waiting for more.
    hub.close()
    return PredictionService(hub, NoBackends(), TARGETS, StreamSlots(limit=4))  # type: ignore[arg-type]


async def _drain(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [item async for item in stream]


def grpc_request(data: bytes) -> None:
    """The first byte picks the RPC, the rest is its request as it arrives on the wire."""
    if not data:
        return
    method = METHODS[data[0] % len(METHODS)]
    request_type = getattr(pb, f"{method}Request")
    try:
        request = request_type.FromString(data[1:])
    except DecodeError:
        return  # grpc refuses a request it cannot decode before any handler runs
    call_grpc(method, request)


def call_grpc(method: str, request: Any) -> Aborted | None:
    """The servicer method in-process with a recording context: returns the abort, None on success."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    handler = getattr(_service(), method)
    result = handler(request, RecordingContext())
    pending: Awaitable[Any] = result if method != "StreamPredictions" else _drain(result)
    try:
        _LOOP.run_until_complete(pending)
    except Aborted as aborted:
        assert aborted.details and len(aborted.details) <= MAX_DETAILS, len(aborted.details)
        # The one way an accepted stream ends here: the hub closed (a draining server).
        stream_end = method == "StreamPredictions" and aborted.code == grpc.StatusCode.UNAVAILABLE
        assert aborted.code in CLIENT_CODES or stream_end, (aborted.code, aborted.details)
        return aborted
    return None
