"""The grpc.aio server: PredictionService, health and reflection on settings.grpc.host:port.

Predictions come from a `PredictionHub`, fed by a `PredictionConsumer` on topic `predictions`
(or directly, in tests); they leave as `cryptopredict.v1` messages built by `convert`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from cryptopredict.settings import Settings
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.ledger import LiveFigures, ledger_summary
from grpc_server.consumer import PredictionConsumer
from grpc_server.convert import ledger_entry_to_proto, prediction_to_proto
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PredictionService"].full_name
# In-flight streams get this long to finish when the server stops; then they are cancelled.
STOP_GRACE_S = 2.0
# Exchange notation as used on our topics, e.g. "BTC/USD", "XBT/USDT".
PAIR_PATTERN = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PredictionService(pb_grpc.PredictionServiceServicer):
    def __init__(self, hub: PredictionHub, ledger: Callable[[str, int, datetime], list[LiveFigures]]) -> None:
        self._hub = hub
        self._ledger = ledger  # blocking I/O: called in a thread

    async def StreamPredictions(
        self, request: pb.StreamPredictionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamPredictionsResponse]:
        if error := _invalid_pairs(request.pairs) or _negative("interval_s", request.interval_s):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        subscription = self._hub.subscribe(request.pairs, request.interval_s or None)
        # grpc cancels this generator when the client goes away; finally runs on that path too.
        try:
            while True:
                prediction = await subscription.get()
                yield pb.StreamPredictionsResponse(prediction=prediction_to_proto(prediction))
        finally:
            self._hub.unsubscribe(subscription)

    async def GetLatestPrediction(
        self, request: pb.GetLatestPredictionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLatestPredictionResponse:
        error = (
            _invalid_pairs([request.pair])
            or ("interval_s must be positive" if request.interval_s <= 0 else None)
            or _negative("horizon_s", request.horizon_s)
        )
        if error:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        prediction = self._hub.latest(request.pair, request.interval_s, request.horizon_s or None)
        if prediction is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no prediction yet for {request.pair} interval_s={request.interval_s}"
                f" horizon_s={request.horizon_s or 'any'}",
            )
        return pb.GetLatestPredictionResponse(prediction=prediction_to_proto(prediction))

    async def GetLedger(
        self, request: pb.GetLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLedgerResponse:
        error = _invalid_pairs([request.pair]) or (
            "interval_s must be positive" if request.interval_s <= 0 else None
        )
        if error:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else EPOCH
        figures = await asyncio.to_thread(self._ledger, request.pair, request.interval_s, since)
        return pb.GetLedgerResponse(
            entries=[
                ledger_entry_to_proto(f)
                for f in figures
                if not request.model_version or f.model_version == request.model_version
            ]
        )


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    # grpc ships no type information, so mypy cannot know that abort() raises; this signature says so.
    await context.abort(code, details)
    raise AssertionError("unreachable: ServicerContext.abort raises")


def _invalid_pairs(pairs: Iterable[str]) -> str | None:
    bad = [pair for pair in pairs if not PAIR_PATTERN.match(pair)]
    return f"malformed pair(s) {bad}: expected e.g. 'BTC/USD'" if bad else None


def _negative(name: str, value: int) -> str | None:
    return f"{name} must not be negative" if value < 0 else None


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    hub: PredictionHub
    health: health_aio.HealthServicer
    consumer: PredictionConsumer | None


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@contextlib.asynccontextmanager
async def start_server(
    settings: Settings, hub: PredictionHub | None = None, consume: bool = True, grace: float = STOP_GRACE_S
) -> AsyncIterator[RunningServer]:
    """Run the server (and the Kafka consumer) for the duration of the block; port 0 picks a free port."""
    if hub is None:
        hub = PredictionHub()
    server = grpc.aio.server()
    engine = sync_engine(settings.postgres)

    def ledger(pair: str, interval_s: int, since: datetime) -> list[LiveFigures]:
        return ledger_summary(engine, pair, interval_s, since)

    pb_grpc.add_PredictionServiceServicer_to_server(PredictionService(hub, ledger), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )

    port = server.add_insecure_port(_bind_address(settings.grpc.host, settings.grpc.port))
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {settings.grpc.host}:{settings.grpc.port}")
    consumer = PredictionConsumer(hub, settings.kafka) if consume else None
    consumer_task: asyncio.Task[None] | None = None
    await server.start()
    try:
        for service in ("", SERVICE_NAME):
            await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if consumer is not None:
            consumer_task = asyncio.create_task(consumer.run(), name="prediction-consumer")
            consumer_task.add_done_callback(_log_consumer_exit)
        logger.info("gRPC server listening on %s:%d", settings.grpc.host, port)
        yield RunningServer(server, port, hub, health, consumer)
    finally:
        # Tell load balancers first, so new calls go elsewhere while in-flight streams drain.
        await health.enter_graceful_shutdown()
        if consumer_task is not None:
            consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer_task
        await server.stop(grace)
        engine.dispose()
        logger.info("gRPC server stopped")


def _log_consumer_exit(task: asyncio.Task[None]) -> None:
    # Without this a crashed consumer would go unnoticed while the server serves stale predictions.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("prediction consumer stopped: predictions are no longer updated", exc_info=exc)


async def serve(settings: Settings, hub: PredictionHub | None = None, consume: bool = True) -> None:
    """Serve until cancelled (Ctrl-C / SIGTERM via the entry point), then stop gracefully."""
    async with start_server(settings, hub, consume) as running:
        # Shielded: cancelling wait_for_termination() cancels grpc's own shutdown future, and then
        # server.stop() in start_server fails with CancelledError instead of stopping gracefully.
        await asyncio.shield(running.server.wait_for_termination())
