"""Coinbase conformance, as tests/integration/test_feed_faults.py is Kraken's: the feed (run_feed with the
Coinbase client) against the replay exchange speaking Coinbase, through the real Kafka broker. The set of
trade ids in Kafka equals the set the exchange served (none lost, none doubled) under dropped and silent
connections, lost messages (skipped sequence numbers), maintenance and a throttled REST API; malformed
messages and a refused subscription are dead letters with their reasons, and the rest keeps flowing.
The faults share runs, so the file takes about 25 s."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from feed_conformance import feed_to_end
from topic_prefixes import run_prefix

from cryptopredict.coinbase.client import CoinbaseTradeClient
from cryptopredict.coinbase.rest import CoinbaseRestClient
from cryptopredict.kafka_admin import read_topic as read_all
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import DeadLetter, Trade, TradeBatch
from cryptopredict.simulators.coinbase import MALFORMED_KINDS, CoinbaseFaults, CoinbaseReplayExchange
from cryptopredict.topics import DEAD_LETTERS, TRADES, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PAIRS = ["BTC/USD", "ETH/USD"]
START = datetime(2026, 5, 1, tzinfo=UTC)


def settings_for(settings):
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": run_prefix("coinbase-feed")})}
    )


def client_for(exchange: CoinbaseReplayExchange) -> CoinbaseTradeClient:
    return CoinbaseTradeClient(
        exchange.url,
        PAIRS,
        rest=CoinbaseRestClient(exchange.rest_url, min_interval_s=0.05),
        heartbeat_timeout_s=1.5,
        backoff_base_s=0.1,
        max_backoff_s=1.0,
    )


async def read_topic(settings, topic: str) -> list[bytes]:
    # Everything acknowledged is on the broker before the topic is read: a short idle time suffices.
    return await read_all(settings.kafka, topic_name(topic, settings.kafka.topic_prefix), idle_s=1.5)


async def feed_until(settings, exchange: CoinbaseReplayExchange, expected: int) -> CoinbaseTradeClient:
    client = client_for(exchange)
    await feed_to_end(settings, exchange, client, expected, timeout_s=30)
    return client


async def published(settings) -> tuple[list[Trade], list[DeadLetter]]:
    trades = [t for v in await read_topic(settings, TRADES) for t in TradeBatch.model_validate_json(v).trades]
    letters = [DeadLetter.model_validate_json(v) for v in await read_topic(settings, DEAD_LETTERS)]
    return trades, letters


def served(exchange: CoinbaseReplayExchange) -> set[tuple[str, int]]:
    return {(pair, trade_id) for pair, ids in exchange.served_trade_ids.items() for trade_id in ids}


async def replay(settings, faults: CoinbaseFaults, minutes: int = 8, seed: int = 5, speed: float = 1200):
    trades = synthetic_market(PAIRS, START, minutes=minutes, seed=seed)
    exchange = CoinbaseReplayExchange(trades, speed=speed, faults=faults)
    await exchange.start()
    try:
        client = await feed_until(settings, exchange, expected=len(trades))
    finally:
        await exchange.stop()
    assert len(served(exchange)) == len(trades)
    return exchange, client


async def test_no_trade_is_lost_or_doubled_across_drops_silence_lost_messages_and_throttling(settings):
    run_settings = settings_for(settings)
    # One fault per connection, in this order: slow enough a replay that the last still sees trades.
    faults = CoinbaseFaults(
        silence_after=10,  # the first connection goes quiet: the watchdog
        drop_after=20,  # the second is cut without a close frame
        drop_times=2,
        skip_sequence_every=14,  # the third loses its 14th trade update
        skip_sequence_times=3,
        # Longer than a reconnect takes, so the client sees it (subscribing meanwhile, it gets `offline`).
        maintenance_after=150,
        maintenance_s=3.0,
        rest_429_every=4,
        rest_500_every=5,
    )
    exchange, client = await replay(run_settings, faults, speed=120)
    trades, letters = await published(run_settings)

    assert {(t.pair, t.trade_id) for t in trades} == served(exchange)
    assert len(trades) == len(served(exchange)), "a trade was published twice"
    assert {t.exchange for t in trades} == {"coinbase"}
    assert letters == [] and client.counts["rejected"] == 0
    counts = client.counts
    assert counts["watchdog_timeouts"] >= 1 and counts["gap_filled"] > 0
    assert counts["sequence_gaps"] >= 1 and exchange.sequence_skipped >= counts["sequence_gaps"]
    assert counts["reconnects"] >= 3 and exchange.connections >= 4  # silence, drop and gap each reconnect
    assert counts["status_offline"] >= 1 and client.status == "online"
    assert client.rest is not None and client.rest.throttled >= 1


async def test_malformed_messages_are_dead_letters_with_reasons_and_the_rest_flows(settings):
    run_settings = settings_for(settings)
    exchange, client = await replay(run_settings, CoinbaseFaults(malformed_every=3), minutes=6, seed=7)
    trades, letters = await published(run_settings)

    assert {(t.pair, t.trade_id) for t in trades} == served(exchange)
    assert len(trades) == len(served(exchange))
    assert set(exchange.malformed_sent) == set(MALFORMED_KINDS)
    assert len(letters) == len(exchange.malformed_sent) == client.counts["rejected"]
    assert {letter.source for letter in letters} == {"trade_feed.coinbase"}
    reasons = " | ".join(letter.reason for letter in letters)
    for expected in (
        "invalid JSON",
        "misses field 'price'",
        "price is not a number",
        "size",
        "unknown product id 'NOPE'",
        "in the future",
        "product NOPE-USD, which this connection did not subscribe",
        "trade_id is not an integer",
        "out of order",
    ):
        assert expected in reasons
    assert client.counts["sequence_out_of_order"] >= 1 and client.counts["reconnects"] == 0


async def test_a_refused_subscription_is_a_dead_letter_and_the_other_products_flow(settings):
    run_settings = settings_for(settings)
    faults = CoinbaseFaults(subscribe_error_pairs=frozenset({"ETH-USD"}))
    trades = synthetic_market(PAIRS, START, minutes=4, seed=9)
    btc = [t for t in trades if t.pair == "BTC/USD"]
    exchange = CoinbaseReplayExchange(trades, speed=60 * 20, faults=faults)
    await exchange.start()
    try:
        client = await feed_until(run_settings, exchange, expected=len(btc))
    finally:
        await exchange.stop()
    published_trades, letters = await published(run_settings)

    assert sorted(t.trade_id for t in published_trades) == sorted(exchange.served_trade_ids["BTC/USD"])
    assert {t.pair for t in published_trades} == {"BTC/USD"}
    assert [letter.reason for letter in letters] == [
        "subscription failed for ETH/USD: Failed to subscribe to market_trades for ETH-USD"
    ]
    assert client.failed_pairs == {"ETH/USD": "Failed to subscribe to market_trades for ETH-USD"}
    assert client.subscribed == {"BTC/USD"}
