"""Trade feed: Kraken WebSocket v2 (or the replay exchange) -> topic `trades`, keyed by pair; one record
per exchange message and pair (a TradeBatch).

Rejected messages go to `dead_letters` with the raw payload and the reason. Gaps after a reconnect
are filled from Kraken's REST `Trades`. Run: `cryptopredict feed [--url ws://...] [--rest-url http://...]`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptopredict import metrics, topics
from cryptopredict.kafka_admin import ensure_topics, last_trade_in_topic
from cryptopredict.kraken.client import KrakenTradeClient, Rejected
from cryptopredict.kraken.rest import KrakenRestClient
from cryptopredict.models import DeadLetter, trade_batches
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


def trade_client(
    settings: Settings, url: str | None = None, rest_url: str | None = None
) -> KrakenTradeClient:
    kraken = settings.kraken
    rest = KrakenRestClient(rest_url or kraken.rest_url, min_interval_s=kraken.rest_min_interval_s)
    return KrakenTradeClient(
        url or kraken.ws_url,
        kraken.pairs,
        rest=rest,
        heartbeat_timeout_s=kraken.heartbeat_timeout_s,
        backoff_base_s=kraken.backoff_base_s,
        max_backoff_s=kraken.max_backoff_s,
        max_future_s=kraken.max_future_s,
    )


async def resume_from_topic(settings: Settings, client: KrakenTradeClient, trades_topic: str) -> None:
    """Starts from the last trade the topic holds per pair, so a restarted feed fills the time it was
    down from REST, unless that is longer than `kraken.max_gap_fill_s` (then: a backfill's job)."""
    too_old = datetime.now(UTC) - timedelta(seconds=settings.kraken.max_gap_fill_s)
    for pair in client.pairs:
        last = await last_trade_in_topic(
            settings.kafka, trades_topic, topics.namespaced_pair(pair, settings.namespace)
        )
        if last is None:
            continue
        if last.timestamp < too_old:
            logger.warning(
                "last %s trade in the topic is from %s: run a backfill for the gap", pair, last.timestamp
            )
            continue
        client.last_trade_id[pair], client.last_timestamp[pair] = last.trade_id, last.timestamp
        logger.info("resuming %s after trade %d at %s", pair, last.trade_id, last.timestamp)


async def run_feed(
    settings: Settings,
    url: str | None = None,
    max_trades: int | None = None,
    rest_url: str | None = None,
    client: KrakenTradeClient | None = None,
    on_ack: Callable[[Any, float], None] | None = None,
) -> dict[str, int]:
    """Publishes until cancelled (or `max_trades`); returns the client's counters."""
    client = client or trade_client(settings, url, rest_url)
    publisher = ReliablePublisher(settings.kafka, on_ack=on_ack)
    trades_topic = topics.topic_name(topics.TRADES, settings.kafka.topic_prefix)
    dead_letter_topic = topics.topic_name(topics.DEAD_LETTERS, settings.kafka.topic_prefix)
    await ensure_topics(settings.kafka)
    await publisher.start()
    if client.rest is not None:
        await resume_from_topic(settings, client, trades_topic)
    published = 0
    metrics.FEED_COUNTS.track(client.counts)
    try:
        async for events in client.batches():
            trades = []
            for event in events:
                if isinstance(event, Rejected):
                    logger.warning("rejected exchange message: %s", event.reason)
                    metrics.DEAD_LETTERS.labels("trade_feed", metrics.reason_kind(event.reason)).inc()
                    letter = DeadLetter(
                        source="trade_feed", reason=event.reason, raw=event.raw, at=datetime.now(UTC)
                    )
                    await publisher.publish(dead_letter_topic, letter.to_json_bytes())
                elif settings.namespace is None:
                    trades.append(event)
                else:  # the client speaks the venue's symbols; everything downstream the project's names
                    trades.append(
                        event.model_copy(
                            update={"pair": topics.namespaced_pair(event.pair, settings.namespace)}
                        )
                    )
            if max_trades is not None:
                trades = trades[: max_trades - published]
            for batch in trade_batches(trades):
                await publisher.publish(
                    trades_topic, batch.to_json_bytes(), key=batch.pair.encode(), context=batch
                )
                metrics.FEED_TRADES.labels(batch.pair).inc(len(batch.trades))
                newest = max(trade.timestamp for trade in batch.trades)
                metrics.FEED_LAST_TRADE.labels(batch.pair).set(newest.timestamp())
            if (published + len(trades)) // 10_000 > published // 10_000:
                logger.info("published %d trades (%s)", published + len(trades), dict(client.counts))
            published += len(trades)
            if max_trades is not None and published >= max_trades:
                break
    finally:
        await publisher.stop()
        if client.rest is not None:
            await client.rest.aclose()
    return dict(client.counts)
