"""The Binance feed against the replay exchange speaking Binance, through the real Kafka broker: the set of
(pair, trade_id) in Kafka equals the set the exchange served (none lost, none doubled) under drops,
silence without pings, proactive reconnects, trade ids skipped on the stream and REST throttling; every
malformed message and refused subscription is a dead letter with its reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from feed_conformance import feed_to_end
from topic_prefixes import run_prefix

from cryptopredict.binance.client import BinanceTradeClient
from cryptopredict.binance.rest import BinanceRestClient
from cryptopredict.kafka_admin import read_topic as read_all
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import DeadLetter, Trade, TradeBatch
from cryptopredict.simulators.binance import BinanceFaults, BinanceReplayExchange
from cryptopredict.topics import DEAD_LETTERS, TRADES, topic_name

pytestmark = pytest.mark.integration

PAIRS = ["BTC/USDT", "ETH/USDT"]
START = datetime(2026, 5, 1, tzinfo=UTC)

# (faults, how the client connects, the client's connection lifetime)
CASES = {
    "combined_stream_rotated_connections_malformed_messages": (
        BinanceFaults(malformed_every=25),
        "combined",
        0.4,
    ),
    "silence_without_pings": (
        BinanceFaults(stop_heartbeats=True, silence_after=30, silence_times=2),
        "base",
        None,
    ),
    "drops_skipped_ids_and_rest_throttled_and_banned_during_gap_fill": (
        BinanceFaults(
            drop_after=40,
            drop_times=2,
            skip_trade_every=50,
            rest_429_every=4,
            rest_418_every=7,
            rest_500_every=3,
        ),
        "base",
        None,
    ),
}


def settings_for(settings):
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": run_prefix("binance-feed")}),
            "binance": settings.binance.model_copy(update={"pairs": PAIRS}),
        }
    )


def client_for(exchange: BinanceReplayExchange, url: str, pairs=PAIRS, **options) -> BinanceTradeClient:
    rest = BinanceRestClient(exchange.rest_url, min_interval_s=0.05, max_backoff_s=1.0, ban_backoff_s=0.5)
    return BinanceTradeClient(
        url, pairs, rest=rest, heartbeat_timeout_s=1.5, backoff_base_s=0.1, max_backoff_s=1.0, **options
    )


async def topic_contents(settings) -> tuple[list[TradeBatch], list[DeadLetter]]:
    def read(topic: str, idle_s: float):
        return read_all(settings.kafka, topic_name(topic, settings.kafka.topic_prefix), idle_s)

    batches, letters = await asyncio.gather(read(TRADES, 2.0), read(DEAD_LETTERS, 1.5))
    return (
        [TradeBatch.model_validate_json(v) for v in batches],
        [DeadLetter.model_validate_json(v) for v in letters],
    )


@pytest.mark.parametrize("case", list(CASES))
async def test_every_served_trade_reaches_kafka_exactly_once(settings, case):
    faults, connect, lifetime = CASES[case]
    run_settings = settings_for(settings)
    trades = synthetic_market(PAIRS, START, minutes=12, seed=5)
    exchange = BinanceReplayExchange(trades, speed=60 * 15, faults=faults)
    await exchange.start()
    url = exchange.combined_url(PAIRS) if connect == "combined" else exchange.url
    options = {} if lifetime is None else {"max_connection_s": lifetime}
    client = client_for(exchange, url, **options)
    try:
        counts = await feed_to_end(run_settings, exchange, client, len(trades))
    finally:
        await exchange.stop()
    batches, letters = await topic_contents(run_settings)
    published = [t for batch in batches for t in batch.trades]
    served = {(pair, trade_id) for pair, ids in exchange.served_trade_ids.items() for trade_id in ids}
    assert len(served) == len(trades)
    assert {(t.pair, t.trade_id) for t in published} == served
    assert len(published) == len(served), "a trade was published twice"
    assert {b.market for b in batches} == {"binance:BTC/USDT", "binance:ETH/USDT"}
    assert all(isinstance(t, Trade) and t.exchange == "binance" for t in published)

    assert len(letters) == len(exchange.malformed_sent) == counts.get("rejected", 0)
    assert {letter.source for letter in letters} <= {"trade_feed.binance"}
    if "malformed" in case:
        reasons = " ".join(letter.reason for letter in letters)
        for expected_reason in (
            "invalid JSON",
            "misses field",
            "not a number",
            "qty",
            "unknown symbol",
            "future",
            "not subscribed",
            "not a trade event",
        ):
            assert expected_reason in reasons
    if case.startswith("combined"):
        assert counts["rotations"] >= 1 and counts.get("reconnects", 0) == 0
    if case.startswith("drops"):
        assert counts["reconnects"] >= 1 and counts["gap_filled"] > 0
        assert exchange.skipped_trade_ids and counts["stream_gaps"] >= 1
        assert client.rest.throttled >= 1 and client.rest.banned >= 1
    if case == "silence_without_pings":
        assert counts["watchdog_timeouts"] >= 1 and counts["gap_filled"] > 0
    assert counts.get("gap_unfilled", 0) == 0


async def test_a_refused_subscription_leaves_the_other_pair_flowing(settings):
    run_settings = settings_for(settings)
    trades = synthetic_market(PAIRS, START, minutes=6, seed=9)
    btc = [t for t in trades if t.pair == "BTC/USDT"]
    exchange = BinanceReplayExchange(
        trades, speed=60 * 15, faults=BinanceFaults(subscribe_error_pairs=frozenset({"ETH/USDT"}))
    )
    await exchange.start()
    try:
        # A raw stream URL for BTC; the client still subscribes each pair, and ETH is refused.
        client = client_for(exchange, exchange.raw_url(["BTC/USDT"]))
        counts = await feed_to_end(run_settings, exchange, client, len(btc))
    finally:
        await exchange.stop()
    batches, letters = await topic_contents(run_settings)
    published = [t for batch in batches for t in batch.trades]
    assert sorted(t.trade_id for t in published) == sorted(exchange.served_trade_ids["BTC/USDT"])
    assert {t.pair for t in published} == {"BTC/USDT"}
    assert [letter.reason for letter in letters] == [
        "subscription failed for ETH/USDT: 2 Refused: ethusdt@trade"
    ]
    assert counts["rejected"] == 1 and client.failed_pairs == {"ETH/USDT": "2 Refused: ethusdt@trade"}
