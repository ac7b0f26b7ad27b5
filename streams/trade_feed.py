"""Trade feed: one venue's public trade stream (Kraken WebSocket v2, Coinbase Advanced Trade, Binance
spot, or the replay exchange speaking it) -> topic `trades`, keyed by market (topics.market_key: the pair
itself on Kraken); one record per exchange message and pair (a TradeBatch).

Rejected messages go to `dead_letters` with the raw payload and the reason. Gaps after a reconnect are
filled from the venue's REST trades. One process per venue:
`cryptopredict feed [--venue coinbase] [--url ws://...] [--rest-url http://...]`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptopredict import metrics, topics, venue_check
from cryptopredict.feed_client import Rejected
from cryptopredict.kafka_admin import ensure_topics, last_trade_in_topic
from cryptopredict.models import DeadLetter, Trade, trade_batches
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


class TradeClient(metrics.FeedClient, Protocol):
    """What the feed needs of a venue's client (cryptopredict.feed_client.VenueTradeClient); `pairs` are the
    project's pairs without a namespace."""

    rest: Any
    last_trade_id: dict[str, int]
    last_timestamp: dict[str, datetime]

    def batches(self) -> AsyncIterator[list[Trade | Rejected]]: ...


# Each venue's client, imported only by a feed that reads that venue.
TRADE_CLIENTS = {
    "kraken": "cryptopredict.kraken.client:KrakenTradeClient",
    "coinbase": "cryptopredict.coinbase.client:CoinbaseTradeClient",
    "binance": "cryptopredict.binance.client:BinanceTradeClient",
}


def dead_letter_source(exchange: str) -> str:
    """`trade_feed` for Kraken, as before venues existed (dashboards and alerts select it), else
    `trade_feed.<exchange>`."""
    return "trade_feed" if exchange == topics.KRAKEN else f"trade_feed.{exchange}"


def trade_client(
    settings: Settings, url: str | None = None, rest_url: str | None = None, venue: str = topics.KRAKEN
) -> TradeClient:
    """The client of one venue, from its settings section (`kraken`, `coinbase`, `binance`)."""
    section = settings.venue(venue)
    module, _, name = TRADE_CLIENTS[venue].partition(":")
    client_class = getattr(importlib.import_module(module), name)
    client: TradeClient = client_class(
        url or section.ws_url,
        section.pairs,
        rest=client_class.rest_client(rest_url or section.rest_url, section.rest_min_interval_s),
        heartbeat_timeout_s=section.heartbeat_timeout_s,
        backoff_base_s=section.backoff_base_s,
        max_backoff_s=section.max_backoff_s,
        max_future_s=section.max_future_s,
    )
    return client


def _market(settings: Settings, exchange: str, venue_pair: str) -> str:
    return topics.market_key(exchange, topics.namespaced_pair(venue_pair, settings.namespace))


async def resume_from_topic(settings: Settings, client: TradeClient, trades_topic: str) -> None:
    """Starts from the last trade the topic holds per pair, so a restarted feed fills the time it was
    down from REST, unless that is longer than the venue's `max_gap_fill_s` (then: a backfill's job)."""
    too_old = datetime.now(UTC) - timedelta(seconds=settings.venue(client.exchange).max_gap_fill_s)
    for pair in client.pairs:
        last = await last_trade_in_topic(
            settings.kafka, trades_topic, _market(settings, client.exchange, pair)
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
    client: TradeClient | None = None,
    on_ack: Callable[[Any, float], None] | None = None,
    venue: str = topics.KRAKEN,
) -> dict[str, int]:
    """Publishes one venue's trades until cancelled (or `max_trades`); returns the client's counters."""
    client = client or trade_client(settings, url, rest_url, venue)
    publisher = ReliablePublisher(settings.kafka, on_ack=on_ack)
    trades_topic = topics.topic_name(topics.TRADES, settings.kafka.topic_prefix)
    dead_letter_topic = topics.topic_name(topics.DEAD_LETTERS, settings.kafka.topic_prefix)
    await ensure_topics(settings.kafka)
    await publisher.start()
    if client.rest is not None:
        await resume_from_topic(settings, client, trades_topic)
    published = 0
    metrics.track_feed(client, settings.namespace)
    ohlc_check = asyncio.create_task(venue_check.watch_venue_candles(settings, client.exchange, client.rest))
    try:
        async for events in client.batches():
            trades = []
            for event in events:
                if isinstance(event, Trade) and event.exchange != client.exchange:
                    event = Rejected(
                        event.model_dump_json(), f"a {event.exchange} trade on the {client.exchange} feed"
                    )
                if isinstance(event, Rejected):
                    logger.warning("rejected %s message: %s", client.exchange, event.reason)
                    metrics.DEAD_LETTERS.labels("trade_feed", metrics.reason_kind(event.reason)).inc()
                    letter = DeadLetter(
                        source=dead_letter_source(client.exchange),
                        reason=event.reason,
                        raw=event.raw,
                        at=datetime.now(UTC),
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
                    trades_topic, batch.to_json_bytes(), key=batch.market.encode(), context=batch
                )
                metrics.feed_published(batch)
            if (published + len(trades)) // 10_000 > published // 10_000:
                logger.info("published %d trades (%s)", published + len(trades), dict(client.counts))
            published += len(trades)
            if max_trades is not None and published >= max_trades:
                break
    finally:
        ohlc_check.cancel()
        await asyncio.gather(ohlc_check, return_exceptions=True)
        await publisher.stop()
        if client.rest is not None:
            await client.rest.aclose()
    return dict(client.counts)
