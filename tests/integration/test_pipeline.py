"""Trades replayed into the exchange come out as candle rows in PostgreSQL, through the real feed,
the real Kafka broker and the real Faust worker, with exactly the values of the pure candle code."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from scrape import scrape
from sqlalchemy import and_, or_, select
from ta_parity import assert_matches_ta
from topic_prefixes import NAMESPACE, run_prefix

from cryptopredict.features.candles import CandleState
from cryptopredict.features.indicators import WARM_UP, IndicatorConfig, indicator_frame, ta_frame
from cryptopredict.kafka_admin import read_topic
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.kraken.sources import csv_trades, synthetic_trades
from cryptopredict.metrics import serve_metrics
from cryptopredict.models import Candle, DeadLetter, Trade, TradeBatch
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.simulators.exchange import ReplayExchange
from cryptopredict.store.candles import async_engine
from cryptopredict.store.ohlcvt import read_ohlcvt
from cryptopredict.store.schema import candles, dead_letters, technical_indicators
from cryptopredict.topics import (
    CANDLES,
    DEAD_LETTERS,
    FAUST_APP_ID,
    LATE_TRADES,
    TRADES,
    namespaced_pair,
    topic_name,
)
from streams.trade_feed import run_feed

pytestmark = pytest.mark.integration

# The exchange trades ITP/USD; the run, in the test namespace, names it test.ITP/USD from the feed on.
VENUE_PAIR = "ITP/USD"
PAIR = namespaced_pair(VENUE_PAIR, NAMESPACE)
ANCHOR = datetime(2026, 2, 1, tzinfo=UTC)
HAND_ANCHOR = datetime(2026, 3, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def run_settings(settings):
    prefix = run_prefix("it")
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "kraken": settings.kraken.model_copy(update={"pairs": [VENUE_PAIR]}),
            "metrics": settings.metrics.model_copy(update={"stream_port": free_port()}),
        }
    ).in_namespace(NAMESPACE)


@pytest.fixture
def faust_worker(run_settings, tmp_path):
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": run_settings.kafka.topic_prefix,
        "CRYPTOPREDICT_NAMESPACE": NAMESPACE,
        "CRYPTOPREDICT_KRAKEN__PAIRS": f'["{VENUE_PAIR}"]',
        "CRYPTOPREDICT_METRICS__STREAM_PORT": str(run_settings.metrics.stream_port),
    }
    log = (tmp_path / "faust.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "-l", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield tmp_path / "faust.log"
    process.terminate()
    process.wait(30)


async def test_replayed_trades_become_exact_candle_rows(run_settings, faust_worker):
    trades = list(synthetic_trades(VENUE_PAIR, ANCHOR, minutes=40, trades_per_minute=30, seed=11))
    await assert_pipeline_reproduces_candles(run_settings, trades, faust_worker, speed=1200)
    # A malformed record on the trades topic is kept as a dead letter; the stream goes on.
    publisher = ReliablePublisher(run_settings.kafka)
    await publisher.start()
    await publisher.publish(
        topic_name(TRADES, run_settings.kafka.topic_prefix), b"{not a trade", key=PAIR.encode()
    )
    await publisher.stop()
    letters = await read_dead_letters(run_settings, expected=1)
    assert [(d.source, d.raw) for d in letters] == [("candle_builder", "{not a trade")]
    assert "invalid trade" in letters[0].reason
    # The store keeps it too, once; a record on the dead-letter topic that is no dead letter is kept
    # there as well (not sent back to the topic, which would loop).
    publisher = ReliablePublisher(run_settings.kafka)  # a stopped producer can't restart
    await publisher.start()
    await publisher.publish(topic_name(DEAD_LETTERS, run_settings.kafka.topic_prefix), b"\xffno letter")
    await publisher.stop()
    stored = await wait_for_stored_letters(run_settings, letters[0], "\ufffdno letter")
    assert [(r["source"], r["raw"], r["at"]) for r in stored[:1]] == [
        ("candle_builder", "{not a trade", letters[0].at)
    ]
    assert stored[1]["source"] == "dead_letter_sink" and "invalid DeadLetter" in stored[1]["reason"]

    # The worker's /metrics tells the same story: the dead letter by kind, and the group's lag (caught up).
    group = topic_name(FAUST_APP_ID, run_settings.kafka.topic_prefix)
    # The partition the pair's key hashes to: the one the group has committed offsets for.
    partitions = list(range(run_settings.kafka.partitions))
    partition = DefaultPartitioner()(PAIR.encode(), partitions, partitions)
    trades_lag = f'cryptopredict_kafka_consumer_lag{{group="{group}",partition="{partition}",topic="{topic_name(TRADES, run_settings.kafka.topic_prefix)}"}}'
    async with asyncio.timeout(60):
        while True:
            scraped = await scrape(run_settings.metrics.stream_port)
            if trades_lag in scraped:
                break
            await asyncio.sleep(1.0)
    assert (
        scraped['cryptopredict_dead_letters_total{reason="invalid trade batch",source="candle_builder"}'] == 1
    )
    assert scraped[trades_lag] >= 0
    assert scraped[f'cryptopredict_candles_closed_total{{interval_s="60",pair="{PAIR}"}}'] >= 38
    assert scraped['cryptopredict_candle_close_delay_seconds_count{interval_s="60"}'] >= 38
    assert scraped['cryptopredict_indicator_latency_seconds_count{interval_s="60"}'] >= 38
    # Candles are forecast as the builder sends them (streams.ahead), each taken by its own arrival.
    assert scraped.get('cryptopredict_forecasts_ahead_total{outcome="taken"}', 0) > 0
    assert scraped.get('cryptopredict_forecasts_ahead_total{outcome="dropped"}', 0) == 0


def hand_trade(trade_id: int, second: int, price: float) -> Trade:
    at = HAND_ANCHOR + timedelta(seconds=second)
    return Trade(pair=PAIR, trade_id=trade_id, price=price, qty=1.0, side="buy", timestamp=at, ingested_at=at)


async def test_hand_built_sequence_out_of_order_late_and_empty_windows(run_settings, faust_worker):
    """Arrival order, in records as the feed batches them; 1-minute windows, grace 5 s."""
    arrivals = [
        [hand_trade(1, 10, 100.0), hand_trade(3, 30, 102.0)],
        [hand_trade(2, 20, 101.0)],  # out of order inside minute 0: open and close do not move
        [hand_trade(4, 62, 103.0), hand_trade(5, 59, 99.0)],  # minute 0 in grace: 59 s still counts
        [hand_trade(6, 70, 104.0)],  # 70 s is past 60 + 5: minute 0 closes
        [hand_trade(7, 58, 98.0)],  # too late for minute 0, in time for the open 5-minute window
        [hand_trade(8, 200, 105.0)],  # closes minute 1; minute 2 had no trade
        [hand_trade(9, 400, 106.0)],  # closes minutes 3, 4 (empty), 5 (empty) and the first 5 minutes
    ]
    assert run_settings.features.grace_s == 5
    started = datetime.now(UTC)
    publisher = ReliablePublisher(run_settings.kafka)
    await publisher.start()
    # The same pair on Coinbase, interleaved, at twice the prices and with the same trade ids: its own
    # candles (by its own key), never mixed with Kraken's.
    coinbase = [
        [t.model_copy(update={"exchange": "coinbase", "price": 2 * t.price}) for t in b] for b in arrivals
    ]
    for batch in [b for pair in zip(arrivals, coinbase, strict=True) for b in pair]:
        record = TradeBatch(exchange=batch[0].exchange, pair=PAIR, trades=batch)
        await publisher.publish(
            topic_name(TRADES, run_settings.kafka.topic_prefix),
            record.to_json_bytes(),
            key=record.market.encode(),
        )
    await publisher.stop()

    engine = async_engine(run_settings.postgres)
    try:
        minutes = await wait_for_rows(engine, candles, 60, started, 6, faust_worker)
        five = await wait_for_rows(engine, candles, 300, started, 1, faust_worker)
        coinbase_minutes = await wait_for_rows(
            engine, candles, 60, started, 6, faust_worker, exchange="coinbase"
        )
        coinbase_rows = await wait_for_rows(
            engine, technical_indicators, 60, started, 6, faust_worker, exchange="coinbase"
        )
    finally:
        await engine.dispose()
    assert [(r["open"], r["close"], r["trade_count"]) for r in coinbase_minutes[:6]] == [
        (2 * r["open"], 2 * r["close"], r["trade_count"]) for r in minutes[:6]
    ]
    assert len(coinbase_rows) >= 6
    ohlc = [(r["open"], r["high"], r["low"], r["close"], r["trade_count"], r["gap"]) for r in minutes[:6]]
    assert ohlc == [
        (100.0, 102.0, 99.0, 99.0, 4, False),
        (103.0, 104.0, 103.0, 104.0, 2, False),
        (104.0, 104.0, 104.0, 104.0, 0, True),
        (105.0, 105.0, 105.0, 105.0, 1, False),
        (105.0, 105.0, 105.0, 105.0, 0, True),
        (105.0, 105.0, 105.0, 105.0, 0, True),
    ]
    assert [r["window_start"] for r in minutes[:6]] == [HAND_ANCHOR + timedelta(minutes=m) for m in range(6)]
    first_five = five[0]
    assert (first_five["open"], first_five["low"], first_five["close"], first_five["trade_count"]) == (
        100.0,
        98.0,
        105.0,
        8,
    )
    assert first_five["volume"] == 8.0
    late = [
        DeadLetter.model_validate_json(v)
        for v in await read_topic(
            run_settings.kafka, topic_name(LATE_TRADES, run_settings.kafka.topic_prefix)
        )
    ]
    late_trades = [Trade.model_validate_json(d.raw) for d in late]
    assert sorted((t.exchange, t.trade_id) for t in late_trades) == [("coinbase", 7), ("kraken", 7)]
    assert "[60]" in late[0].reason


async def read_dead_letters(run_settings, expected: int, timeout_s: float = 60) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        topic_name(DEAD_LETTERS, run_settings.kafka.topic_prefix),
        **client_kwargs(run_settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(letters) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            letters += [DeadLetter.model_validate_json(r.value) for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return letters


@pytest.mark.realdata
async def test_real_kraken_hour_becomes_exact_candle_rows(run_settings, faust_worker, shared_data):
    trades = list(csv_trades(shared_data / "kraken" / "BTCUSD_trades_2019-07-01T00.csv", VENUE_PAIR))
    await assert_pipeline_reproduces_candles(run_settings, trades, faust_worker, speed=600)


@pytest.mark.realdata
async def test_kraken_hourly_history_gets_tas_indicators_in_the_store(
    run_settings, faust_worker, shared_data
):
    """Kraken's XBT/USD hours (the first 3,000 of the export, gaps included) through the candles topic,
    the indicator agent and the store sink: the stored rows equal `ta` over the same candles."""
    pair = namespaced_pair("IXB/USD", NAMESPACE)  # the export under a pair of its own
    history = list(islice(read_ohlcvt(shared_data / "kraken" / "XBTUSD_60.csv", pair, 3600), 3000))
    assert any(c.gap for c in history)
    started = datetime.now(UTC)
    publisher = ReliablePublisher(run_settings.kafka)
    await publisher.start()
    for candle in history:
        await publisher.publish(
            topic_name(CANDLES, run_settings.kafka.topic_prefix), candle.to_json_bytes(), key=pair.encode()
        )
    await publisher.stop()

    engine = async_engine(run_settings.postgres)
    try:
        rows = await wait_for_rows(
            engine, technical_indicators, 3600, started, len(history), faust_worker, pair=pair, timeout_s=240
        )
    finally:
        await engine.dispose()
    config = IndicatorConfig()
    stored = pd.DataFrame([r["values"] for r in rows], columns=config.feature_names(), dtype=float)
    stored.index = pd.DatetimeIndex([r["window_start"] for r in rows], name="window_start")
    stored[WARM_UP] = [r["warm_up"] for r in rows]
    assert_matches_ta(stored, ta_frame(history, config), config)
    assert stored[WARM_UP].tolist() == stored[config.feature_names()].isna().any(axis=1).tolist()


async def assert_pipeline_reproduces_candles(run_settings, trades, faust_worker, speed):
    started = datetime.now(UTC)
    exchange = ReplayExchange(trades, speed=speed)
    await exchange.start()
    kraken_pair = {"exchange": "kraken", "pair": PAIR}
    published_before = REGISTRY.get_sample_value("cryptopredict_feed_trades_total", kraken_pair) or 0.0
    try:
        counts = await asyncio.wait_for(run_feed(run_settings, exchange.url, max_trades=len(trades)), 120)
    finally:
        await exchange.stop()
    assert counts["trades"] == len(trades) and counts.get("rejected", 0) == 0
    # The feed's metrics count what it published, the newest trade's time, and the venue's status.
    feed_metrics = serve_metrics("127.0.0.1", 0)
    assert feed_metrics is not None
    scraped = await scrape(feed_metrics)
    labels = f'{{exchange="kraken",pair="{PAIR}"}}'
    assert scraped[f"cryptopredict_feed_trades_total{labels}"] - published_before == len(trades)
    newest = max(t.timestamp for t in trades).timestamp()
    assert scraped[f"cryptopredict_feed_last_trade_timestamp_seconds{labels}"] == newest
    assert scraped['cryptopredict_feed_events_total{event="trades",exchange="kraken"}'] == len(trades)
    assert scraped['cryptopredict_feed_venue_online{exchange="kraken"}'] == 1

    engine = async_engine(run_settings.postgres)
    try:
        for interval_s in (60, 300):
            state = CandleState(pair=PAIR, interval_s=interval_s, grace_s=run_settings.features.grace_s)
            named = [t.model_copy(update={"pair": PAIR}) for t in trades]  # as the feed names them
            expected = [c for t in named for c in state.add_trade(t)[0]]
            assert len(expected) >= (38 if interval_s == 60 else 7)  # both sources span 40 minutes or more
            rows = await wait_for_rows(engine, candles, interval_s, started, len(expected), faust_worker)
            by_start = {r["window_start"]: r for r in rows}
            for candle in expected:
                row = by_start[candle.window_start]
                for field in (
                    "open",
                    "high",
                    "low",
                    "close",
                    "trade_count",
                    "first_trade_id",
                    "last_trade_id",
                    "gap",
                ):
                    assert row[field] == getattr(candle, field), (interval_s, candle.window_start, field)
                assert row["volume"] == pytest.approx(candle.volume, rel=1e-12)
                assert row["vwap"] == pytest.approx(candle.vwap, rel=1e-12)

        # Indicator rows in the store are what the training code computes from the stored candles.
        candle_rows = await wait_for_rows(engine, candles, 60, started, 38, faust_worker)
        stored = [
            Candle.model_validate({k: v for k, v in r.items() if k != "written_at"}) for r in candle_rows
        ]
        frame = indicator_frame(stored)
        indicator_rows = await wait_for_rows(
            engine, technical_indicators, 60, started, len(stored), faust_worker
        )
        by_start = {r["window_start"]: r for r in indicator_rows}
        for start, expected_row in frame.iterrows():
            row = by_start[start.to_pydatetime()]
            assert row["warm_up"] == bool(expected_row["warm_up"])
            for name, value in row["values"].items():
                assert (value is None) == pd.isna(expected_row[name]), (start, name)
                if value is not None:
                    assert value == expected_row[name], (start, name)
    finally:
        await engine.dispose()


async def wait_for_stored_letters(run_settings, letter: DeadLetter, unreadable_raw: str) -> list[dict]:
    """The stored rows of `letter` and of the unreadable record, each found exactly once."""
    query = select(dead_letters).where(
        or_(
            dead_letters.c.letter_key == letter.store_key(),
            and_(dead_letters.c.raw == unreadable_raw, dead_letters.c.at >= letter.at),
        )
    )
    engine = async_engine(run_settings.postgres)
    try:
        async with asyncio.timeout(60):
            while True:
                async with engine.connect() as conn:
                    rows = [dict(r._mapping) for r in await conn.execute(query.order_by(dead_letters.c.id))]
                if len(rows) >= 2:
                    break
                await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    assert len(rows) == 2, rows
    return rows


async def wait_for_rows(
    engine, table, interval_s, since, count, faust_worker, pair=PAIR, timeout_s=120, exchange="kraken"
):
    query = (
        select(table)
        .where(
            table.c.exchange == exchange,
            table.c.pair == pair,
            table.c.interval_s == interval_s,
            table.c.written_at >= since,
        )
        .order_by(table.c.window_start)
    )
    deadline = time.monotonic() + timeout_s
    rows = []
    while time.monotonic() < deadline and len(rows) < count:
        await asyncio.sleep(0.5)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
    assert len(rows) >= count, faust_worker.read_text()[-3000:]
    return rows
