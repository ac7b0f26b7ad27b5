"""Prometheus metrics: the one catalogue of every series our processes expose, and the endpoint.

Each long-running process (feed, Faust worker, gRPC server) calls `serve_metrics(port)` once at start
and updates the series below where the event happens. Temporal workers expose the SDK's own metrics
(workflow completions and failures by type, activity latencies) plus ours through the SDK runtime's
Prometheus endpoint instead (see `temporal_runtime` in cryptopredict.orchestration), since workflow code
must count through `workflow.metric_meter()` to stay correct under replay.

Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units. Labels are
bounded: pairs and model versions are configured or registered, and free-text reasons are cut to their
kind with `reason_kind` before they become a label.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cryptopredict.topics import namespaced_pair

if TYPE_CHECKING:
    from cryptopredict.models import TradeBatch

logger = logging.getLogger(__name__)

NAMESPACE = "cryptopredict"
# Seconds: from sub-millisecond (hub fan-out, unary RPCs) to a minute (LLM calls, close delays).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Trade feed, one process per venue: `exchange` is the venue, `pair` the project's pair without it (so
# Kraken's series keep the label values they had before venues existed). Plus
# cryptopredict_feed_events_total{exchange,event}, cryptopredict_feed_reconnects_total{exchange} and
# cryptopredict_feed_venue_online{exchange}, read from the venue client by FeedCounts at scrape time.
FEED_TRADES = Counter(
    "feed_trades", "Trades published to the trades topic", ["exchange", "pair"], namespace=NAMESPACE
)
FEED_LAST_TRADE = Gauge(
    "feed_last_trade_timestamp_seconds",
    "Unix time of the newest trade published, per venue and pair",
    ["exchange", "pair"],
    namespace=NAMESPACE,
)

# Our closed 1m candles against the venue's own OHLC endpoint (cryptopredict.venue_check), in the feed.
VENUE_OHLC_DEVIATION = Gauge(
    "venue_ohlc_deviation_ratio",
    "Largest relative difference of open, high, low, close or volume between our 1m candles and the"
    " venue's OHLC rows, over the windows of the latest check",
    ["exchange", "pair"], namespace=NAMESPACE,
)  # fmt: skip
VENUE_OHLC_WINDOWS = Counter(
    "venue_ohlc_windows", "Closed 1m windows compared with the venue's OHLC rows", ["exchange", "pair"],
    namespace=NAMESPACE,
)  # fmt: skip
VENUE_OHLC_DISAGREEING = Counter(
    "venue_ohlc_disagreeing_windows",
    "Closed 1m windows whose candle differs from the venue's OHLC row by more than the venue's ohlc_tolerance",
    ["exchange", "pair"], namespace=NAMESPACE,
)  # fmt: skip
VENUE_OHLC_CHECKS = Counter(
    "venue_ohlc_checks", "OHLC checks of one pair against the venue, by outcome (ok, failed)",
    ["exchange", "outcome"], namespace=NAMESPACE,
)  # fmt: skip

# Every stage
DEAD_LETTERS = Counter(
    "dead_letters", "Inputs rejected and kept on a dead-letter topic, by stage and kind of reason",
    ["source", "reason"], namespace=NAMESPACE,
)  # fmt: skip

# Faust worker
CANDLES_CLOSED = Counter(
    "candles_closed", "Candles closed and published", ["pair", "interval_s"], namespace=NAMESPACE
)
CANDLE_CLOSE_DELAY = Histogram(
    "candle_close_delay_seconds", "Wall-clock time from a window's end to its candle's publication",
    ["interval_s"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS,
)  # fmt: skip
INDICATOR_LATENCY = Histogram(
    "indicator_latency_seconds", "Time to update a pair's indicators from one closed candle",
    ["interval_s"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS,
)  # fmt: skip
CONSUMER_LAG = Gauge(
    "kafka_consumer_lag", "Records behind the end of the partition, per consumer group",
    ["group", "topic", "partition"], namespace=NAMESPACE,
)  # fmt: skip
STORE_WRITE_RETRIES = Counter(
    "store_write_retries", "Writes of the store sink retried because the store was unreachable",
    ["sink"], namespace=NAMESPACE,
)  # fmt: skip
PREDICTIONS = Counter(
    "predictions", "Predictions published", ["pair", "horizon_s", "model_version"], namespace=NAMESPACE
)
PREDICTION_REFUSALS = Counter(
    "prediction_refusals", "Refusals published instead of a prediction, by kind of reason",
    ["pair", "horizon_s", "reason"], namespace=NAMESPACE,
)  # fmt: skip
PREDICTION_LATENCY = Histogram(
    "prediction_latency_seconds",
    "Time from a candle's arrival at the prediction agent (its sending, when forecast ahead) to its forecasts"
    " being sent",
    namespace=NAMESPACE, buckets=LATENCY_BUCKETS,
)  # fmt: skip
FORECASTS_AHEAD = Counter(
    "forecasts_ahead_total",
    "Candles forecast as this worker's candle builder sent them: taken by the candle's arrival, or dropped"
    " (made again on arrival)",
    ["outcome"], namespace=NAMESPACE,
)  # fmt: skip
MODEL_LOADS = Counter(
    "model_loads", "Champion loads by the prediction agent, by outcome (loaded, failed)",
    ["model", "outcome"], namespace=NAMESPACE,
)  # fmt: skip
SERVING_VERSION = Gauge(
    "serving_model_version", "Registry version of the champion the prediction agent serves", ["model"],
    namespace=NAMESPACE,
)  # fmt: skip
INTERVAL_LEVEL = Gauge(
    "interval_level", "Coverage the champion's intervals are drawn at, moved by adaptive conformal inference",
    ["model"], namespace=NAMESPACE,
)  # fmt: skip

# gRPC server
GRPC_REQUEST_DURATION = Histogram(
    "grpc_request_duration_seconds", "Unary RPC latency in the server, by method and status code",
    ["method", "code"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS,
)  # fmt: skip
GRPC_STREAMS = Counter(
    "grpc_streams", "Prediction streams ended, or refused (RESOURCE_EXHAUSTED), by status code", ["code"],
    namespace=NAMESPACE,
)  # fmt: skip
GRPC_ACTIVE_STREAMS = Gauge("grpc_active_streams", "Prediction streams open now", namespace=NAMESPACE)
GRPC_DROPPED = Counter(
    "grpc_dropped_predictions", "Predictions dropped for clients that read too slowly", namespace=NAMESPACE
)
LIVE_MAE = Gauge(
    "live_mae", "Mean absolute error of a model version's predictions with known outcomes (quote currency)",
    ["model", "version"], namespace=NAMESPACE,
)  # fmt: skip
LIVE_SKILL = Gauge(
    "live_skill_vs_persistence", "1 - live MAE / persistence MAE over the same predictions",
    ["model", "version"], namespace=NAMESPACE,
)  # fmt: skip
LIVE_COVERAGE = Gauge(
    "live_interval_coverage", "Fraction of realised prices inside the prediction interval",
    ["model", "version"], namespace=NAMESPACE,
)  # fmt: skip
LIVE_OUTCOMES = Gauge(
    "live_outcomes", "Predictions of a model version whose realised price is known", ["model", "version"],
    namespace=NAMESPACE,
)  # fmt: skip

# Temporal workers: created through the SDK's metric meter (workflow.metric_meter() /
# activity.metric_meter()), so these are names, not prometheus_client objects. The SDK adds its own
# temporal_workflow_completed / _failed / _endtoend_latency by workflow_type.
# cryptopredict_workflow_starts_total (counter, attribute workflow_type) lives in workflows/interceptors.py,
# which the workflow sandbox loads.
LLM_CALLS = (
    "cryptopredict_llm_calls_total"  # counter, attribute outcome (ok, unavailable, invalid_output, refused)
)
LLM_LATENCY = "cryptopredict_llm_latency_seconds"  # histogram
MODEL_DECISIONS = "cryptopredict_model_decisions_total"  # counter, attribute decision (promoted, kept)


class FeedClient(Protocol):
    """What the metrics read of a venue's trade client (cryptopredict.feed_client.VenueTradeClient)."""

    @property
    def exchange(self) -> str: ...
    @property
    def pairs(self) -> Sequence[str]: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def status(self) -> str: ...


class FeedCounts(Collector):
    """Exposes the venue client's counters (trades, heartbeats, reconnects, duplicates_dropped, rejected,
    gap_filled, status_*) as they are, so the client keeps one set of counts, and whether the venue says it
    is online (its status channel's "online", or subscribed and flowing on venues without one)."""

    def __init__(self) -> None:
        self.client: FeedClient | None = None

    def track(self, client: FeedClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            f"{NAMESPACE}_feed_events",
            "Events of the exchange feed client, by kind",
            labels=["exchange", "event"],
        )
        reconnects = CounterMetricFamily(
            f"{NAMESPACE}_feed_reconnects", "Reconnects of the exchange WebSocket", labels=["exchange"]
        )
        online = GaugeMetricFamily(
            f"{NAMESPACE}_feed_venue_online",
            "1 while the venue's status, as the feed's client sees it, is online; else 0",
            labels=["exchange"],
        )
        if (client := self.client) is not None:
            counts = dict(client.counts)
            for event, value in sorted(counts.items()):
                events.add_metric([client.exchange, event], value)
            reconnects.add_metric([client.exchange], counts.get("reconnects", 0))
            online.add_metric([client.exchange], float(client.status == "online"))
        yield from (events, reconnects, online)


FEED_COUNTS = FeedCounts()
REGISTRY.register(FEED_COUNTS)


def track_feed(client: FeedClient, namespace: str | None = None) -> None:
    """Exports `client`'s counts and status, and a zero count of trades for each of its pairs (named as
    the feed publishes them, inside `namespace`), so that a pair that never trades is seen as quiet."""
    FEED_COUNTS.track(client)
    for pair in client.pairs:
        FEED_TRADES.labels(client.exchange, namespaced_pair(pair, namespace))


def feed_published(batch: TradeBatch) -> None:
    """Counts a batch the feed published, and the time of its newest trade."""
    FEED_TRADES.labels(batch.exchange, batch.pair).inc(len(batch.trades))
    newest = max(trade.timestamp for trade in batch.trades)
    FEED_LAST_TRADE.labels(batch.exchange, batch.pair).set(newest.timestamp())


_REASON_KIND = re.compile(r"^[^:(\[{0-9]*")


def reason_kind(reason: str) -> str:
    """A bounded label for a free-text reason: its words before the first detail (colon, number,
    bracket), e.g. "invalid trade: price must be > 0" -> "invalid trade"."""
    kind = _REASON_KIND.match(reason)
    text = " ".join((kind.group(0) if kind else "").split())[:60]
    return text or "other"


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int | None:
    """Start the /metrics endpoint on host:`port` (0: a free port) and return the bound port. A negative
    port turns metrics off; a port in use is logged and the process runs on without metrics (a second
    worker on one host needs its own port setting), since metrics must never stop the pipeline."""
    if port < 0:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.warning("no metrics endpoint: cannot bind %s:%d (%s)", host, port, exc)
        return None
    bound = int(server.server_port)
    logger.info("prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
