"""Streaming features throughput: trades -> candles at three intervals -> indicators -> store, through the
real broker, one real Faust worker and the real PostgreSQL.

The worker starts first; then a seeded synthetic market (3 pairs) is published as fast as the broker
takes it, in records of up to 100 trades per pair (what the feed publishes for one exchange message
when the exchange, or the replay exchange at full speed, sends trades in bulk). trades/s = trades /
(last candle emitted - first trade produced), from Kafka's own timestamps. close-to-store = a candle row's `written_at` - the Kafka timestamp of that candle's message
(the moment the worker closed the window and emitted it).

Usage: .venv/bin/python bench/streaming.py [--quick]   (needs `cryptopredict stack up`)
Ends with one JSON line: {"trades_per_s": ..., "close_to_store_p99_ms": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.features.candles import CandleState  # noqa: E402
from cryptopredict.kafka_admin import ensure_topics  # noqa: E402
from cryptopredict.kraken.sources import synthetic_market  # noqa: E402
from cryptopredict.models import trade_batches  # noqa: E402
from cryptopredict.publisher import ReliablePublisher  # noqa: E402
from cryptopredict.settings import get_settings  # noqa: E402
from cryptopredict.store.candles import async_engine  # noqa: E402
from cryptopredict.store.schema import candles  # noqa: E402
from cryptopredict.topics import CANDLES, TRADES, topic_name  # noqa: E402

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
TRADES_PER_RECORD = 100
START = datetime(2025, 6, 1, tzinfo=UTC)


def start_worker(prefix: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def candle_messages(
    bootstrap: str, topic: str, expected: int, timeout_s: float
) -> list[tuple[int, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [(r.timestamp, r.value) for r in records]
    finally:
        await consumer.stop()
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    prefix = f"bench-stream-{uuid.uuid4().hex[:8]}-"
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(kafka)
    minutes = 3000 if args.quick else 12000
    trades = synthetic_market(PAIRS, START, minutes=minutes, seed=11)
    now = datetime.now(UTC)
    trades = [t.model_copy(update={"ingested_at": now}) for t in trades]
    expected = 0
    for pair in PAIRS:
        for interval_s in settings.features.candle_intervals_s:
            state = CandleState(pair=pair, interval_s=interval_s, grace_s=settings.features.grace_s)
            expected += sum(len(state.add_trade(t)[0]) for t in trades if t.pair == pair)

    log_path = settings.local_dir.resolve() / "logs" / "bench-streaming.log"
    worker = start_worker(prefix, log_path)
    try:
        await asyncio.sleep(15)  # the worker joins its group and recovers (empty) tables
        publisher = ReliablePublisher(kafka.bootstrap_servers)
        await publisher.start()
        records = trade_batches(trades, max_size=TRADES_PER_RECORD)
        started_ms = time.time() * 1000
        for batch in records:
            await publisher.publish(
                topic_name(TRADES, prefix), batch.to_json_bytes(), key=batch.pair.encode()
            )
        await publisher.stop()
        published_s = time.time() - started_ms / 1000
        print(
            f"published {len(trades):,} trades in {published_s:.1f}s; waiting for {expected:,} candles",
            file=sys.stderr,
        )
        found = await candle_messages(kafka.bootstrap_servers, topic_name(CANDLES, prefix), expected, 600)
        await asyncio.sleep(3)  # the sink's last micro-batch
        engine = async_engine(settings.postgres)
        async with engine.connect() as conn:
            query = select(
                candles.c.pair, candles.c.interval_s, candles.c.window_start, candles.c.written_at
            ).where(
                candles.c.written_at >= datetime.fromtimestamp(started_ms / 1000, tz=UTC),
                candles.c.pair.in_(PAIRS),
                candles.c.window_start < datetime(2026, 1, 1, tzinfo=UTC),
            )
            written = {
                (r.pair, r.interval_s, r.window_start): r.written_at for r in await conn.execute(query)
            }
        await engine.dispose()
    finally:
        worker.terminate()
        worker.wait(30)

    from cryptopredict.models import Candle

    assert len(found) >= expected, f"only {len(found)} of {expected} candles: see {log_path}"
    last_ms = max(ts for ts, _ in found)
    rate = len(trades) / ((last_ms - started_ms) / 1000)
    delays = []
    for ts, value in found:
        candle = Candle.model_validate_json(value)
        row_time = written.get((candle.pair, candle.interval_s, candle.window_start))
        if row_time is not None:
            delays.append(row_time.timestamp() * 1000 - ts)
    p50, p99 = np.percentile(delays, [50, 99])
    print(f"{rate:,.0f} trades/s; close to store p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)
    body = f"""
One Faust worker (candle builder at {settings.features.candle_intervals_s} s, indicator agent, prediction
agent, store sinks) on the local broker and PostgreSQL, {len(trades):,} trades of 3 pairs published as
fast as the broker takes them in {len(records):,} records (up to {TRADES_PER_RECORD} trades of one pair each);
{len(found):,} candles emitted.

| figure | value |
|---|---|
| trades/s through the worker (first trade produced -> last candle emitted) | {rate:,.0f} |
| window close -> row in the store, p50 | {p50:.1f} ms |
| window close -> row in the store, p99 | {p99:.1f} ms |
| candles matched to store rows | {len(delays):,} |
"""
    command = "python bench/streaming.py" + (" --quick" if args.quick else "")
    publish(
        "Streaming features: trades to store",
        command,
        body,
        {"trades_per_s": round(rate), "close_to_store_p99_ms": round(p99, 1)},
    )


if __name__ == "__main__":
    asyncio.run(main())
