"""In-memory fan-out of predictions to stream subscribers, plus the latest prediction per key.

Predictions flow in through `PredictionHub.publish` (from the Kafka consumer, or a test) and out
through each `Subscription`'s queue. Pure asyncio, no I/O: one event loop owns it, so no locks.
Each prediction is encoded for the wire once, in `publish`, however many streams send it: with a
thousand subscribers, encoding per stream cost more than gRPC's own sending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from cryptopredict import metrics
from cryptopredict.models.ml import Prediction
from grpc_server.convert import prediction_response_bytes

logger = logging.getLogger(__name__)

# Enough for a burst of every pair, interval and horizon; a client further behind is too slow anyway.
DEFAULT_QUEUE_SIZE = 256

PredictionKey = tuple[str, int, int]  # (market key: topics.market_key, interval_s, horizon_s)


def prediction_key(prediction: Prediction) -> PredictionKey:
    return prediction.market, prediction.interval_s, prediction.horizon_s


@dataclass(frozen=True, slots=True)
class Published:
    """A prediction and its encoded response message, as streams and GetLatestPrediction send it."""

    prediction: Prediction
    wire: bytes


@dataclass(eq=False)
class Subscription:
    """One stream's view of the hub: the predictions it asked for, in a bounded queue.

    When the queue is full the oldest queued prediction is dropped and counted in `dropped`:
    a slow client only loses its own stale predictions; it never blocks `publish`, slows the
    other subscribers or makes the server's memory grow.
    """

    exchange: str | None  # None means every exchange
    pairs: frozenset[str]  # pairs on that exchange (on any, with None); empty means all pairs
    interval_s: int | None  # None means all intervals
    horizon_s: int | None  # None means all horizons
    # None is the end-of-stream marker put by `close`, behind what is still queued.
    queue: asyncio.Queue[Published | None]
    dropped: int = field(default=0)

    def wants(self, published: Published) -> bool:
        prediction = published.prediction
        return (
            (self.exchange is None or prediction.exchange == self.exchange)
            and (not self.pairs or prediction.pair in self.pairs)
            and (self.interval_s is None or prediction.interval_s == self.interval_s)
            and (self.horizon_s is None or prediction.horizon_s == self.horizon_s)
        )

    def offer(self, published: Published | None) -> bool:
        """Queue a prediction; returns True when the oldest queued one was dropped to make room."""
        dropped = self.queue.full()
        if dropped:
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(published)
        return dropped

    def close(self) -> bool:
        """End the stream after the predictions already queued; True when a full queue lost its oldest."""
        return self.offer(None)

    async def get(self) -> Published | None:
        """The next prediction, or None when the hub has closed and everything queued was delivered."""
        return await self.queue.get()


class PredictionHub:
    """Keeps the latest prediction per (market, interval_s, horizon_s) and fans out new ones.
    A market is a pair on one exchange (topics.market_key): `BTC/USD` on Kraken and on Coinbase are two.

    Each subscriber gets a bounded queue of `queue_size`; see `Subscription` for what happens when
    a client falls behind (drop the oldest, count it).
    """

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._latest: dict[PredictionKey, Published] = {}
        self._subscriptions: set[Subscription] = set()
        self.closed = False
        # Predictions dropped for slow subscribers since start, over all of them.
        self.dropped = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, prediction: Prediction) -> bool:
        """Record and fan out a prediction; returns False when it is not newer than the latest known.

        Replays (the consumer reads the topic from the beginning) and at-least-once duplicates are
        therefore neither sent twice nor able to replace a newer prediction.
        """
        key = prediction_key(prediction)
        current = self._latest.get(key)
        if current is not None and _recency(prediction) <= _recency(current.prediction):
            return False
        published = self._latest[key] = Published(prediction, prediction_response_bytes(prediction))
        for subscription in self._subscriptions:
            if subscription.wants(published) and subscription.offer(published):
                self.dropped += 1
                metrics.GRPC_DROPPED.inc()
        return True

    def latest(self, market: str, interval_s: int, horizon_s: int | None = None) -> Published | None:
        """The latest prediction of a key (`market`: topics.market_key); with no horizon, the newest of any."""
        if horizon_s is not None:
            return self._latest.get((market, interval_s, horizon_s))
        candidates = [
            p
            for (k_market, k_interval, _), p in self._latest.items()
            if (k_market, k_interval) == (market, interval_s)
        ]
        return max(candidates, key=lambda p: _recency(p.prediction), default=None)

    def subscribe(
        self,
        pairs: Collection[str] = (),
        interval_s: int | None = None,
        horizon_s: int | None = None,
        *,
        exchange: str | None = None,
    ) -> Subscription:
        """Register a subscriber whose queue already holds the latest prediction of each matching key:
        of `pairs` (all when empty) on `exchange` (every one when None), at that interval and horizon.

        Snapshot and registration happen in one synchronous step, so no prediction published in
        between is missed or delivered twice. After `close`, the subscription ends after the snapshot.
        """
        subscription = Subscription(
            exchange, frozenset(pairs), interval_s, horizon_s, asyncio.Queue(self.queue_size)
        )
        for published in sorted(self._latest.values(), key=lambda p: _recency(p.prediction)):
            if subscription.wants(published) and subscription.offer(published):
                self.dropped += 1
                metrics.GRPC_DROPPED.inc()
        if self.closed:
            subscription.close()
            return subscription
        self._subscriptions.add(subscription)
        logger.debug(
            "subscribed %s on %s (now %d)",
            sorted(subscription.pairs),
            exchange or "every exchange",
            self.subscriber_count,
        )
        return subscription

    def close(self) -> None:
        """Shutdown: every stream ends once it has delivered what is queued for it (the drain)."""
        self.closed = True
        for subscription in self._subscriptions:
            if subscription.close():
                self.dropped += 1
                metrics.GRPC_DROPPED.inc()

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if subscription.dropped:
            logger.warning("slow subscriber dropped %d predictions", subscription.dropped)
        logger.debug("unsubscribed (now %d)", self.subscriber_count)


def _recency(prediction: Prediction) -> tuple[datetime, datetime]:
    # The newest candle wins; for the same candle (e.g. a new champion re-predicting it), the newest forecast.
    return prediction.feature_time, prediction.made_at
