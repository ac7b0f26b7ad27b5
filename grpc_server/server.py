"""The grpc.aio server: PredictionService, health and reflection on settings.grpc.host:port.

Predictions come from a `PredictionHub`, fed by a `PredictionConsumer` on topic `predictions`
(or directly, in tests); they leave as `cryptopredict.v1` messages built by `convert`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import itertools
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, ParamSpec, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from cryptopredict import metrics, topics
from cryptopredict.ml.live import LiveFigures
from cryptopredict.ml.registry import AliasedVersions, aliased_versions
from cryptopredict.settings import GrpcSettings, Settings
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.ledger import ledger_summary
from cryptopredict.topics import (
    EXCHANGES,
    KRAKEN,
    ForecastTarget,
    market_key,
    registered_model_name,
    split_market,
)
from grpc_server.consumer import PredictionConsumer
from grpc_server.convert import (
    ModelTarget,
    ledger_entry_to_proto,
    model_to_proto,
    only_quantiles,
    prediction_response_bytes,
)
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PredictionService"].full_name
# In-flight streams get this long to finish when the server stops; then they are cancelled.
STOP_GRACE_S = 2.0
# Exchange notation as used on our topics, e.g. "BTC/USD", "XBT/USDT".
PAIR_PATTERN = re.compile(topics.PAIR_PATTERN)
# What a prediction forecasts; a request's empty `target` means this one.
SERVED_TARGETS = ("price",)
# A request's `exchange` that means every exchange served, where a request may name many pairs
# (StreamPredictions, ListModels). An empty one means Kraken: what clients sent before exchanges existed.
ANY_EXCHANGE = "*"
# An error message shows at most this many of the client's values, each cut to SHOWN_CHARS: it stays
# short whatever the client sent (status details travel in a header, which grpc caps at a few KiB).
SHOWN_VALUES = 3
SHOWN_CHARS = 24


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Quantile levels this close are the same level.
LEVEL_TOLERANCE = 1e-9
# How often the live_* gauges are refreshed from the ledger (a minute candle's outcome lands once a minute).
LIVE_FIGURES_EVERY_S = 15.0
P = ParamSpec("P")
R = TypeVar("R")
# Left open when tokens are configured: probes check health without credentials, and reflection only
# tells what the public protos in the repository tell (grpcurl needs it to encode any call).
UNAUTHENTICATED_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


@dataclass(frozen=True)
class Targets:
    """What this deployment forecasts (from settings): requests for anything else are INVALID_ARGUMENT,
    so a typo is told apart from "nothing yet" (NOT_FOUND)."""

    pairs: tuple[str, ...]  # market keys (topics.market_key): `BTC/USD` on Kraken, `coinbase:BTC/USD`
    # Candle interval (seconds) -> its horizons in candles: predictions are made at these intervals only.
    horizons: dict[int, tuple[int, ...]]
    quantile_levels: tuple[float, ...] = ()  # the levels every prediction's quantiles are at
    # What the registered models forecast (model.targets): ListModels and GetModel cover each.
    kinds: tuple[ForecastTarget, ...] = ("price",)
    max_values: int = 100  # pairs or quantile levels in one request (grpc.max_list_values)

    @classmethod
    def from_settings(cls, settings: Settings) -> Targets:
        return cls(
            tuple(settings.pairs),
            {i: tuple(sorted(h)) for i, h in sorted(settings.forecast_horizons().items())},
            tuple(settings.model.quantile_levels),
            tuple(settings.model.targets),
            settings.grpc.max_list_values,
        )

    def check_kind(self, target: str) -> str | None:
        """Why no model is registered for `target` ("" means price), or None."""
        if (target or "price") in self.kinds:
            return None
        return f"target {_short(target)} has no registered models: targets are {list(self.kinds)}"

    @property
    def intervals(self) -> list[int]:
        return sorted(self.horizons)

    @functools.cached_property
    def _split(self) -> tuple[tuple[str, str, str], ...]:
        """(market key, exchange, pair) of every served market."""
        return tuple((market, *split_market(market)) for market in self.pairs)

    @property
    def exchanges(self) -> list[str]:
        """The exchanges with a served pair, in the order of the pairs."""
        return list(dict.fromkeys(on for _, on, _ in self._split))

    def pairs_on(self, exchange: str | None) -> list[str]:
        """The served pairs of `exchange` (every exchange when None), as the exchange's requests name them."""
        return list(dict.fromkeys(pair for _, on, pair in self._split if exchange in (None, on)))

    def markets(self, exchange: str | None, pairs: Iterable[str] = ()) -> list[str]:
        """The served market keys of `pairs` (all when empty; in their order) on `exchange` (every
        exchange when None)."""
        on_exchange = [(market, pair) for market, on, pair in self._split if exchange in (None, on)]
        wanted = list(pairs) or list(dict.fromkeys(pair for _, pair in on_exchange))
        return [market for pair in wanted for market, served in on_exchange if served == pair]

    def check_exchange(self, exchange: str, any_exchange: bool = False) -> str | None:
        """Why a request's `exchange` is not served, or None. With `any_exchange`, ANY_EXCHANGE is too."""
        if exchange == ANY_EXCHANGE and any_exchange:
            return None
        served = self.exchanges
        if exchange == ANY_EXCHANGE:
            return f"exchange '*' (every exchange) is not one exchange: name one of {served}"
        if exchange and exchange not in EXCHANGES:
            return f"unknown exchange {_short(exchange)}: this server forecasts on exchanges {served}"
        if (exchange or KRAKEN) not in served:
            default = "" if exchange else " (the exchange of a request that names none)"
            return f"exchange {exchange or KRAKEN!r}{default} is not served: exchanges are {served}"
        return None

    def horizons_s(self, interval_s: int = 0) -> list[int]:
        """The horizons served at `interval_s` in seconds (0: at any interval)."""
        intervals = [interval_s] if interval_s else self.intervals
        return sorted({h * i for i in intervals for h in self.horizons.get(i, ())})

    def check(
        self,
        pairs: Iterable[str],
        interval_s: int,
        horizon_s: int = 0,
        zero_means_any: bool = False,
        target: str = "",
        quantile_levels: Iterable[float] = (),
        exchange: str = "",
    ) -> str | None:
        """Why the request names something not served, or None. With `zero_means_any`, a zero interval
        or horizon is a wildcard (and ANY_EXCHANGE is every exchange); otherwise the interval must be
        given. An empty target means "price", an empty exchange Kraken."""
        pairs, levels = list(pairs), list(quantile_levels)
        for label, values in (("pairs", pairs), ("quantile levels", levels)):
            if len(values) > self.max_values:
                return f"at most {self.max_values} {label} per request, got {len(values)}"
        if error := self.check_exchange(exchange, any_exchange=zero_means_any):
            return error
        if error := _invalid_pairs(pairs):
            return error
        on = requested_exchange(exchange)
        served = self.pairs_on(on)
        unknown = [pair for pair in pairs if pair not in served]
        if unknown:
            where = "on any exchange" if on is None else f"on {on}"
            return f"unknown pair(s) {_shown(unknown)} {where}: this server forecasts {served} there"
        if not (interval_s == 0 and zero_means_any) and interval_s not in self.horizons:
            return f"interval_s={interval_s} is not served: predictions are made at interval_s in {self.intervals}"
        if horizon_s != 0 and horizon_s not in self.horizons_s(interval_s):
            at = f" at interval_s={interval_s}" if interval_s else ""
            return (
                f"horizon_s={horizon_s} is not served: horizons{at} are {self.horizons_s(interval_s)} seconds"
            )
        if target and target not in SERVED_TARGETS:
            return f"target {_short(target)} is not served: targets are {list(SERVED_TARGETS)}"
        unserved = [level for level in levels if not self.serves_level(level)]
        if unserved:
            return f"quantile level(s) {_shown(unserved)} not served: levels are {list(self.quantile_levels)}"
        return None

    def serves_level(self, level: float) -> bool:
        # A level computed by the client (1 - 0.9) may differ from ours in the last bits.
        return any(math.isclose(level, served, abs_tol=LEVEL_TOLERANCE) for served in self.quantile_levels)

    def model_targets(self, markets: Iterable[str]) -> list[ModelTarget]:
        """Every forecast target of `markets` (market keys), ordered by market, interval, horizon and kind."""
        return [
            self.model_target(market, interval_s, h, kind)
            for market in markets
            for interval_s in self.intervals
            for h in self.horizons[interval_s]
            for kind in self.kinds
        ]

    def model_target(
        self, market: str, interval_s: int, horizon_candles: int, kind: ForecastTarget = "price"
    ) -> ModelTarget:
        name = registered_model_name(market, interval_s, horizon_candles, target=kind)
        exchange, pair = split_market(market)
        return ModelTarget(name, pair, interval_s, horizon_candles * interval_s, kind, exchange)


def requested_exchange(exchange: str) -> str | None:
    """The exchange a request names: Kraken when it names none, None (every one) for ANY_EXCHANGE."""
    return None if exchange == ANY_EXCHANGE else exchange or KRAKEN


def requested_market(exchange: str, pair: str) -> str:
    """The market key of a request's (exchange, pair), once `Targets.check` has accepted them."""
    return market_key(exchange or KRAKEN, pair)


class Backends:
    """The blocking lookups behind the unary RPCs (store and model registry); called in threads."""

    def __init__(self, settings: Settings) -> None:
        self._engine = sync_engine(settings.postgres)
        self._tracking_uri = settings.mlflow.tracking_uri
        # What the ledger's coverage test compares with: the level training calibrates and ACI steers to.
        self._nominal_coverage = settings.model.interval_coverage

    def ledger(self, market: str, interval_s: int, since: datetime) -> list[LiveFigures]:
        return ledger_summary(self._engine, market, interval_s, since, self._nominal_coverage)

    def models(self, names: list[str]) -> list[AliasedVersions | None]:
        client = MlflowClient(self._tracking_uri)
        return [aliased_versions(client, name) for name in names]

    def close(self) -> None:
        self._engine.dispose()


def peer_host(peer: str) -> str:
    """The address of grpc's `context.peer()` without its port: "ipv4:10.0.0.7:53122" -> "10.0.0.7",
    "ipv6:[::1]:53122" -> "::1"; anything else (a unix socket) as it is."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6" and address.startswith("["):
        return address[1 : address.find("]")]
    if kind == "ipv4":
        return address.rpartition(":")[0]
    return peer


class StreamSlots:
    """The prediction streams each caller holds open, at most `limit` (grpc.max_streams_per_caller).

    A caller is its bearer token (by position in grpc.tokens, the secret stays out of messages) when the
    server has tokens, otherwise its address without the port: a client cannot get more by reconnecting
    from another port. Callers at `exempt_hosts` (the stream edge) are counted but never refused.
    """

    def __init__(self, limit: int, exempt_hosts: Iterable[str] = (), tokens: Iterable[str] = ()) -> None:
        self.limit = limit
        self._exempt = frozenset(exempt_hosts)
        self._tokens = [token.encode() for token in tokens]
        self.open: dict[str, int] = {}

    def caller(self, peer: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str, bool]:
        """(who is calling, whether exempt from the bound)."""
        host = peer_host(peer)
        header = dict(metadata or ()).get("authorization", "")
        token = (header.decode() if isinstance(header, bytes) else header).partition(" ")[2].encode()
        for number, known in enumerate(self._tokens, start=1):
            if hmac.compare_digest(token, known):
                return f"token #{number}", host in self._exempt
        return host, host in self._exempt

    def take(self, caller: str, exempt: bool = False) -> bool:
        """Count one more stream of `caller`; False (nothing counted) when it holds `limit` already."""
        held = self.open.get(caller, 0)
        if held >= self.limit and not exempt:
            return False
        self.open[caller] = held + 1
        return True

    def release(self, caller: str) -> None:
        held = self.open.pop(caller, 0) - 1
        if held > 0:
            self.open[caller] = held


class PredictionService(pb_grpc.PredictionServiceServicer):
    def __init__(self, hub: PredictionHub, backends: Backends, targets: Targets, slots: StreamSlots) -> None:
        self._hub = hub
        self._backends = backends
        self._targets = targets
        self._slots = slots

    async def StreamPredictions(
        self, request: pb.StreamPredictionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        if error := self._targets.check(
            request.pairs,
            request.interval_s,
            request.horizon_s,
            zero_means_any=True,
            target=request.target,
            exchange=request.exchange,
        ):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        caller, exempt = self._slots.caller(context.peer(), context.invocation_metadata())
        if not self._slots.take(caller, exempt):
            metrics.GRPC_STREAMS.labels("RESOURCE_EXHAUSTED").inc()
            logger.warning("stream of %s refused: %d open already", caller, self._slots.limit)
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"caller {_short(caller)} has {self._slots.limit} prediction streams open, the most one caller"
                " may hold (grpc.max_streams_per_caller): close one first",
            )
        try:
            subscription = self._hub.subscribe(
                request.pairs,
                request.interval_s or None,
                request.horizon_s or None,
                exchange=requested_exchange(request.exchange),
            )
        except BaseException:
            self._slots.release(caller)
            raise
        metrics.GRPC_ACTIVE_STREAMS.inc()
        ending = "CANCELLED"  # what grpc does to this generator when the client goes away
        # grpc cancels this generator when the client goes away; finally runs on that path too.
        try:
            # Headers now, not with the first prediction: they tell a client (the stream edge among them)
            # that the request was accepted, even before there is anything to send.
            await context.send_initial_metadata(())
            while (published := await subscription.get()) is not None:
                yield published.wire  # the encoded response (see PRE_ENCODED)
            ending = "UNAVAILABLE"
        finally:
            self._hub.unsubscribe(subscription)
            self._slots.release(caller)
            metrics.GRPC_ACTIVE_STREAMS.dec()
            metrics.GRPC_STREAMS.labels(ending).inc()
        # Drained at shutdown: UNAVAILABLE is the code clients retry, against this or another replica.
        await _abort(context, grpc.StatusCode.UNAVAILABLE, "server shutting down: reconnect")

    async def GetLatestPrediction(
        self, request: pb.GetLatestPredictionRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        if error := self._targets.check(
            [request.pair],
            request.interval_s,
            request.horizon_s,
            target=request.target,
            quantile_levels=request.quantile_levels,
            exchange=request.exchange,
        ):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        market = requested_market(request.exchange, request.pair)
        published = self._hub.latest(market, request.interval_s, request.horizon_s or None)
        if published is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no prediction yet for {market} interval_s={request.interval_s}"
                f" horizon_s={request.horizon_s or 'any'}",
            )
        if request.quantile_levels:
            # A selection of quantiles is a response of its own: encoded for this call only.
            selected = only_quantiles(published.prediction, request.quantile_levels, LEVEL_TOLERANCE)
            return prediction_response_bytes(selected)
        return published.wire  # the encoded response (see PRE_ENCODED)

    async def GetLedger(
        self, request: pb.GetLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLedgerResponse:
        if error := self._targets.check([request.pair], request.interval_s, exchange=request.exchange):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        try:
            since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else EPOCH
        except ValueError as exc:  # seconds or nanos outside what a Timestamp may hold
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"since is not a valid time: {exc}")
        market = requested_market(request.exchange, request.pair)
        figures = await _call_backend(context, self._backends.ledger, market, request.interval_s, since)
        return pb.GetLedgerResponse(
            entries=[
                ledger_entry_to_proto(f)
                for f in figures
                if not request.model_version or f.model_version == request.model_version
            ]
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        if error := self._targets.check(request.pairs, 0, zero_means_any=True, exchange=request.exchange):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        markets = self._targets.markets(requested_exchange(request.exchange), request.pairs)
        models = await self._models(context, self._targets.model_targets(markets))
        return pb.ListModelsResponse(models=[m for m in models if m is not None])

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelResponse:
        error = (
            self._targets.check(
                [request.pair], request.interval_s, request.horizon_s, exchange=request.exchange
            )
            or ("horizon_s must be given" if request.horizon_s == 0 else None)
            or self._targets.check_kind(request.target)
        )
        if error:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, error)
        target = self._targets.model_target(
            requested_market(request.exchange, request.pair),
            request.interval_s,
            request.horizon_s // request.interval_s,
            cast(ForecastTarget, request.target or "price"),
        )
        [model] = await self._models(context, [target])
        if model is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no model registered yet as {target.name}")
        return pb.GetModelResponse(model=model)

    async def _models(
        self, context: grpc.aio.ServicerContext, targets: list[ModelTarget]
    ) -> list[pb.Model | None]:
        """The registry entries of `targets` (None where none is registered), each version with its live
        figures over all its predictions whose outcome is known."""
        registered = await _call_backend(context, self._backends.models, [t.name for t in targets])
        live: dict[tuple[str, str], LiveFigures] = {}
        for market, interval_s in sorted({(t.market, t.interval_s) for t in targets}):
            ledger = await _call_backend(context, self._backends.ledger, market, interval_s, EPOCH)
            live.update({(f.model_name, f.model_version): f for f in ledger})
        return [
            None if versions is None else model_to_proto(target, versions, live)
            for target, versions in zip(targets, registered, strict=True)
        ]


async def _call_backend(
    context: grpc.aio.ServicerContext, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Runs a blocking lookup in a thread; the store or registry being down is UNAVAILABLE, not a crash."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except (SQLAlchemyError, MlflowException, OSError) as exc:
        logger.warning("%s failed: %s", getattr(function, "__name__", function), exc)
        await _abort(context, grpc.StatusCode.UNAVAILABLE, f"backend unavailable: {type(exc).__name__}")


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    # grpc ships no type information, so mypy cannot know that abort() raises; this signature says so.
    await context.abort(code, details)
    raise AssertionError("unreachable: ServicerContext.abort raises")


def _invalid_pairs(pairs: Iterable[str]) -> str | None:
    bad = [pair for pair in pairs if not PAIR_PATTERN.match(pair)]
    return f"malformed pair(s) {_shown(bad)}: expected e.g. 'BTC/USD'" if bad else None


def _shown(values: list[str] | list[float]) -> str:
    """The client's values for an error message: the first few, each cut short, and how many more."""
    more = len(values) - SHOWN_VALUES
    return (
        "[" + ", ".join(map(_short, values[:SHOWN_VALUES])) + (f", and {more} more" if more > 0 else "") + "]"
    )


def _short(value: str | float) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _observed(
    method: str, behavior: Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]
) -> Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]:
    """`behavior` (a unary handler) observing its latency by method and status code. Wrapped once at
    registration: an interceptor would build a handler on every call. Streams are counted in the service,
    where their end is known."""
    duration = metrics.GRPC_REQUEST_DURATION

    async def observed(request: object, context: grpc.aio.ServicerContext) -> object:
        start = time.perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException:
            code = context.code()
            # An abort sets the code; anything else is what grpc reports for an exception.
            label = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            duration.labels(method, label).observe(time.perf_counter() - start)
            raise
        duration.labels(method, "OK").observe(time.perf_counter() - start)
        return response

    return observed


# Methods whose handlers return their response already encoded: a prediction is encoded once when it
# arrives (PredictionHub), not once per stream or call that sends it.
PRE_ENCODED = frozenset({"StreamPredictions", "GetLatestPrediction"})


def _add_prediction_service(server: grpc.aio.Server, service: PredictionService) -> None:
    """Registers `service` as the generated add_PredictionServiceServicer_to_server would, except that
    PRE_ENCODED methods send bytes as they are and unary methods are observed (`_observed`)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["PredictionService"].methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        serializer = None if method.name in PRE_ENCODED else response_type.SerializeToString
        behavior = getattr(service, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                behavior, request_type.FromString, serializer
            )
        else:
            observed = _observed(f"/{SERVICE_NAME}/{method.name}", behavior)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                observed, request_type.FromString, serializer
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <one of the tokens>` with UNAUTHENTICATED."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens]
        self.rejected = 0

    def _authorized(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        header = dict(metadata or ()).get("authorization", "")
        scheme, _, token = (header.decode() if isinstance(header, bytes) else header).partition(" ")
        # Compared in constant time, and against every token, so timing tells nothing about them.
        matches = [hmac.compare_digest(token.encode(), known) for known in self._tokens]
        return scheme.lower() == "bearer" and any(matches)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if (
            handler is None
            or details.method in UNAUTHENTICATED_METHODS
            or self._authorized(details.invocation_metadata)
        ):
            return handler
        self.rejected += 1
        logger.warning("unauthenticated call to %s rejected (%d so far)", details.method, self.rejected)
        message = "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'"

        async def deny_unary(request: object, context: grpc.aio.ServicerContext) -> NoReturn:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - makes this an async generator, the shape a stream handler has

        # Same request/response kind as the real method, so the client sees a clean status.
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                deny_stream, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            _observed(details.method, deny_unary), handler.request_deserializer, handler.response_serializer
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    hub: PredictionHub
    health: health_aio.HealthServicer
    consumer: PredictionConsumer | None
    auth: BearerTokenAuth | None
    slots: StreamSlots


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _add_port(server: grpc.aio.Server, settings: GrpcSettings) -> int:
    address = bind_address(settings.host, settings.port)
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    return port


@contextlib.asynccontextmanager
async def start_server(
    settings: Settings, hub: PredictionHub | None = None, consume: bool = True, grace: float = STOP_GRACE_S
) -> AsyncIterator[RunningServer]:
    """Run the server (and the Kafka consumer) for the duration of the block; port 0 picks a free port.

    On exit: health turns NOT_SERVING, the hub closes so every stream delivers what is queued for it and
    ends with UNAVAILABLE (clients reconnect elsewhere), and calls still running after `grace` are cancelled.
    """
    if hub is None:
        hub = PredictionHub()
    tokens = [token.get_secret_value() for token in settings.grpc.tokens]
    auth = BearerTokenAuth(tokens) if tokens else None
    server = grpc.aio.server(
        interceptors=[auth] if auth else None,
        options=[("grpc.max_receive_message_length", settings.grpc.max_request_bytes)],
    )
    backends = Backends(settings)
    slots = StreamSlots(settings.grpc.max_streams_per_caller, settings.grpc.stream_limit_exempt_hosts, tokens)
    _add_prediction_service(server, PredictionService(hub, backends, Targets.from_settings(settings), slots))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = _add_port(server, settings.grpc)
    consumer = PredictionConsumer(hub, settings.kafka) if consume else None
    consumer_task: asyncio.Task[None] | None = None
    await server.start()
    try:
        for service in ("", SERVICE_NAME):
            await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if consumer is not None:
            consumer_task = asyncio.create_task(consumer.run(), name="prediction-consumer")
            consumer_task.add_done_callback(_log_consumer_exit)
        live_figures = asyncio.create_task(
            _export_live_figures(backends, Targets.from_settings(settings)), name="live-figures"
        )
        tls = "TLS" if settings.grpc.tls_cert_file else "plaintext"
        logger.info(
            "gRPC server listening on %s:%d (%s, %s)",
            settings.grpc.host,
            port,
            tls,
            f"{len(tokens)} bearer token(s)" if tokens else "no authentication",
        )
        yield RunningServer(server, port, hub, health, consumer, auth, slots)
    finally:
        # Tell load balancers first, so new calls go elsewhere while in-flight streams drain.
        await health.enter_graceful_shutdown()
        for task in (consumer_task, live_figures):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        hub.close()
        await server.stop(grace)
        backends.close()
        logger.info("gRPC server stopped")


async def _export_live_figures(backends: Backends, targets: Targets) -> None:
    """Keeps the live_* gauges (MAE, skill, coverage, outcomes per model version) at the ledger's values."""
    while True:
        for market, interval_s in itertools.product(targets.pairs, targets.intervals):
            try:
                figures = await asyncio.to_thread(backends.ledger, market, interval_s, EPOCH)
            except SQLAlchemyError as exc:  # the store down: keep the last values, try again later
                logger.warning("live figures of %s not updated: %s", market, exc)
                continue
            for f in figures:
                labels = (f.model_name, f.model_version)
                metrics.LIVE_OUTCOMES.labels(*labels).set(f.n)
                metrics.LIVE_MAE.labels(*labels).set(f.live_mae)
                metrics.LIVE_SKILL.labels(*labels).set(
                    math.nan if f.skill_vs_persistence is None else f.skill_vs_persistence
                )
                metrics.LIVE_COVERAGE.labels(*labels).set(
                    math.nan if f.interval_coverage is None else f.interval_coverage
                )
        await asyncio.sleep(LIVE_FIGURES_EVERY_S)


def _log_consumer_exit(task: asyncio.Task[None]) -> None:
    # Without this a crashed consumer would go unnoticed while the server serves stale predictions.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("prediction consumer stopped: predictions are no longer updated", exc_info=exc)


async def serve(settings: Settings, hub: PredictionHub | None = None, consume: bool = True) -> None:
    """Serve until cancelled (Ctrl-C / SIGTERM via the entry point), then stop gracefully."""
    metrics.serve_metrics(settings.metrics.host, settings.metrics.grpc_port)
    async with start_server(settings, hub, consume) as running:
        # What the imports (mlflow, pandas, sqlalchemy) left on the heap is kept for good: moved out of the
        # collector's reach, a full collection no longer walks it and stalls every call for ~90 ms.
        gc.collect()
        gc.freeze()
        # Shielded: cancelling wait_for_termination() cancels grpc's own shutdown future, and then
        # server.stop() in start_server fails with CancelledError instead of stopping gracefully.
        await asyncio.shield(running.server.wait_for_termination())
