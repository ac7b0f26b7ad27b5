"""The feed against every fault of the replay exchange, through the real Kafka broker: the set of
trade_ids in Kafka equals the set the exchange served (none lost, none doubled), and every malformed
message is a dead letter with its reason."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from feed_conformance import feed_to_end
from topic_prefixes import run_prefix

from cryptopredict.kafka_admin import read_topic as read_all
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import DeadLetter, Trade, TradeBatch
from cryptopredict.simulators.exchange import Faults, ReplayExchange
from cryptopredict.topics import DEAD_LETTERS, TRADES, topic_name
from streams.trade_feed import run_feed, trade_client

pytestmark = pytest.mark.integration

PAIRS = ["BTC/USD", "ETH/USD"]
START = datetime(2026, 5, 1, tzinfo=UTC)

FAULTS = {
    "none": Faults(),
    "drop_connection": Faults(drop_after=40, drop_times=3),
    "silent_connection": Faults(stop_heartbeats=True, silence_after=30, silence_times=2),
    "malformed_messages": Faults(malformed_every=5),
    "maintenance": Faults(maintenance_after=20, maintenance_s=2.0),
    "rest_throttled_during_gap_fill": Faults(drop_after=40, drop_times=2, rest_429_every=2, rest_500_every=3),
}


def settings_for(settings, pairs):
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": run_prefix("feed")}),
            "kraken": settings.kraken.model_copy(
                update={
                    "pairs": pairs,
                    "heartbeat_timeout_s": 1.5,
                    "backoff_base_s": 0.1,
                    "max_backoff_s": 1.0,
                    "rest_min_interval_s": 0.05,
                }
            ),
        }
    )


async def read_topic(settings, topic: str, idle_s: float = 3.0) -> list[bytes]:
    return await read_all(settings.kafka, topic_name(topic, settings.kafka.topic_prefix), idle_s)


async def published_trades(settings) -> list[Trade]:
    return [t for v in await read_topic(settings, TRADES) for t in TradeBatch.model_validate_json(v).trades]


async def run_to_end(settings, exchange: ReplayExchange, expected: int) -> dict[str, int]:
    client = trade_client(settings, exchange.url, exchange.rest_url)
    return await feed_to_end(settings, exchange, client, expected)


async def run_against(settings, exchange: ReplayExchange, expected: int) -> dict[str, int]:
    """Runs the feed until it has published `expected` trades (or a time limit), then stops it."""
    feed = asyncio.create_task(
        run_feed(settings, exchange.url, rest_url=exchange.rest_url, max_trades=expected)
    )
    done, _ = await asyncio.wait({feed}, timeout=90)
    if not done:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
        pytest.fail(f"feed did not publish {expected} trades in time")
    return feed.result()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_served_trade_reaches_kafka_exactly_once(settings, fault):
    run_settings = settings_for(settings, PAIRS)
    trades = synthetic_market(PAIRS, START, minutes=12, seed=5)
    exchange = ReplayExchange(trades, speed=60 * 20, faults=FAULTS[fault])
    await exchange.start()
    try:
        counts = await run_to_end(run_settings, exchange, expected=len(trades))
    finally:
        await exchange.stop()
    published = await published_trades(run_settings)
    served = {(pair, trade_id) for pair, ids in exchange.served_trade_ids.items() for trade_id in ids}
    assert len(served) == len(trades)
    assert {(t.pair, t.trade_id) for t in published} == served
    assert len(published) == len(served), "a trade was published twice"

    letters = [
        DeadLetter.model_validate_json(v) for v in await read_topic(run_settings, DEAD_LETTERS, idle_s=1)
    ]
    assert len(letters) == len(exchange.malformed_sent) == counts.get("rejected", 0)
    if fault == "malformed_messages":
        reasons = " ".join(letter.reason for letter in letters)
        for expected_reason in (
            "invalid JSON",
            "misses field",
            "not a number",
            "qty",
            "unknown symbol",
            "future",
        ):
            assert expected_reason in reasons
    if fault in ("drop_connection", "silent_connection", "rest_throttled_during_gap_fill"):
        assert counts["reconnects"] >= 1 and counts["gap_filled"] > 0
    if fault == "silent_connection":
        assert counts["watchdog_timeouts"] >= 1
    if fault == "maintenance":
        assert counts["status_maintenance"] == 1


async def test_a_failed_subscription_leaves_the_other_pairs_flowing(settings):
    run_settings = settings_for(settings, PAIRS)
    trades = synthetic_market(PAIRS, START, minutes=6, seed=9)
    btc = [t for t in trades if t.pair == "BTC/USD"]
    exchange = ReplayExchange(
        trades, speed=60 * 20, faults=Faults(subscribe_error_pairs=frozenset({"ETH/USD"}))
    )
    await exchange.start()
    try:
        counts = await run_against(run_settings, exchange, expected=len(btc))
    finally:
        await exchange.stop()
    published = await published_trades(run_settings)
    assert sorted(t.trade_id for t in published) == sorted(exchange.served_trade_ids["BTC/USD"])
    assert {t.pair for t in published} == {"BTC/USD"}
    letters = [
        DeadLetter.model_validate_json(v) for v in await read_topic(run_settings, DEAD_LETTERS, idle_s=1)
    ]
    assert [letter.reason for letter in letters] == [
        "subscription failed for ETH/USD: EService:Unavailable ETH/USD"
    ]
    assert counts["rejected"] == 1


async def test_a_restarted_feed_fills_the_time_it_was_down(settings):
    run_settings = settings_for(settings, PAIRS)
    run_settings = run_settings.model_copy(
        update={"kraken": run_settings.kraken.model_copy(update={"max_gap_fill_s": 10 * 365 * 86400})}
    )
    trades = synthetic_market(PAIRS, START, minutes=12, seed=8)
    exchange = ReplayExchange(trades, speed=60 * 20)
    await exchange.start()
    try:
        first = await run_against(run_settings, exchange, expected=len(trades) // 3)
        await asyncio.sleep(1.0)  # the feed is down while the market goes on
        second = await run_against(run_settings, exchange, expected=len(trades) - len(trades) // 3)
    finally:
        await exchange.stop()
    published = await published_trades(run_settings)
    assert sorted((t.pair, t.trade_id) for t in published) == sorted((t.pair, t.trade_id) for t in trades)
    assert first["trades"] + second["trades"] == len(trades)
    assert second["gap_filled"] > 0
