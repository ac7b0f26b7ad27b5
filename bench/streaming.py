"""Streaming features throughput and latency: trades -> candles at three intervals -> indicators -> store,
through the real broker, one real Faust worker (with every agent) and the real PostgreSQL.

One worker serves four phases, each on its own pairs, published in records of up to 100 trades of one
pair (what the feed publishes for one exchange message when trades arrive in bulk):

- busy market, as fast as the broker takes it: 3 pairs at 600 trades per minute each (a 1-minute
  candle per 600 trades). trades/s = trades / (last candle emitted - first trade produced), from
  Kafka's timestamps. This is the headline `trades_per_s`.
- replay of a quiet history, as fast as possible: 3 pairs at about 13 trades per minute (the seeded
  synthetic market), a candle per ~11 trades, so the per-candle work (indicators, predictions, store)
  dominates: what a backfill costs.
- live pace: the busy market published at a fixed 1,000 trades/s (far below capacity). close-to-store
  = a candle row's `written_at` - the Kafka timestamp of the candle's message (the moment the worker
  closed the window). This is the headline `close_to_store_p99_ms`; the same figure under saturation
  (queueing behind the backlog) is reported beside it.
- target pace: the busy market at 10,000 trades/s, the throughput target, to show the delay at that
  load (`close_to_store_p99_ms_at_10k`).

Every figure is the median of 3 runs (`--runs`), each a fresh process with its own worker, with the
range over the runs beside the delays.

Usage: .venv/bin/python bench/streaming.py [--quick] [--runs N]   (needs `cryptopredict stack up`)
Ends with one JSON line: {"trades_per_s": ..., "close_to_store_p99_ms": ..., and the other figures}, the
medians, with each run's values beside them (`close_to_store_p99_ms_runs`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import RUN_OUTPUT, RUNS, across_runs, median_figures, publish, repeat_runs  # noqa: E402
from cryptopredict.features.candles import CandleState  # noqa: E402
from cryptopredict.kafka_admin import consumer_lag, delete_topics_under, ensure_topics  # noqa: E402
from cryptopredict.kafka_client import client_kwargs  # noqa: E402
from cryptopredict.kraken.sources import PairSpec, synthetic_market  # noqa: E402
from cryptopredict.models import Candle, Trade, trade_batches  # noqa: E402
from cryptopredict.publisher import ReliablePublisher  # noqa: E402
from cryptopredict.settings import KafkaSettings, Settings, get_settings  # noqa: E402
from cryptopredict.store.candles import async_engine  # noqa: E402
from cryptopredict.store.schema import candles  # noqa: E402
from cryptopredict.topics import CANDLE_TICKS, CANDLES, FAUST_APP_ID, TRADES, topic_name  # noqa: E402

START = datetime(2025, 6, 1, tzinfo=UTC)
TRADES_PER_RECORD = 100
BUSY = 600.0  # trades per minute and pair
LIVE_RATE = 1000  # trades/s in the live-pace phase
TARGET_RATE = 10_000  # trades/s: the throughput target, paced, to see the delay at that load


@dataclass
class Phase:
    name: str
    pairs: list[str]
    trades: list[Trade]
    pace: float | None  # trades/s, or None: as fast as the broker takes them
    trades_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    candles: int = 0


def start_worker(prefix: str, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = os.environ | (env or {}) | {"CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def market(names: list[str], trades_per_minute: float | None, minutes: int, seed: int) -> list[Trade]:
    specs = [
        PairSpec(name, trades_per_minute=trades_per_minute) if trades_per_minute else name for name in names
    ]
    now = datetime.now(UTC)
    return [
        t.model_copy(update={"ingested_at": now}) for t in synthetic_market(specs, START, minutes, seed=seed)
    ]


def expected_candles(
    trades: list[Trade], pairs: list[str], settings: Settings
) -> set[tuple[str, int, datetime]]:
    keys: set[tuple[str, int, datetime]] = set()
    for pair in pairs:
        for interval_s in settings.features.candle_intervals_s:
            state = CandleState(pair=pair, interval_s=interval_s, grace_s=settings.features.grace_s)
            for trade in trades:
                if trade.pair == pair:
                    keys.update((c.pair, c.interval_s, c.window_start) for c in state.add_trade(trade)[0])
    return keys


async def publish_trades(kafka: KafkaSettings, topic: str, phase: Phase) -> float:
    """Publishes the phase's trades; returns the wall time (ms) of the first."""
    records = trade_batches(phase.trades, max_size=TRADES_PER_RECORD)
    publisher = ReliablePublisher(kafka)
    await publisher.start()
    started = time.time()
    sent = 0
    for batch in records:
        await publisher.publish(topic, batch.to_json_bytes(), key=batch.pair.encode())
        sent += len(batch.trades)
        if phase.pace is not None:
            ahead = started + sent / phase.pace - time.time()
            if ahead > 0:
                await publisher.flush()
                await asyncio.sleep(ahead)
    await publisher.stop()
    return started * 1000


async def candle_messages(
    kafka: KafkaSettings, topic: str, wanted: set[tuple[str, int, datetime]], timeout_s: float
) -> dict[tuple[str, int, datetime], int]:
    """Kafka timestamp (ms) of the first message of each wanted candle."""
    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka), auto_offset_reset="earliest")
    await consumer.start()
    found: dict[tuple[str, int, datetime], int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= found.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    c = Candle.model_validate_json(r.value)
                    found.setdefault((c.pair, c.interval_s, c.window_start), r.timestamp)
    finally:
        await consumer.stop()
    missing = wanted - found.keys()
    assert not missing, f"{len(missing)} candles missing, e.g. {sorted(missing)[:3]}"
    return {key: found[key] for key in wanted}


async def run_phase(settings: Settings, prefix: str, phase: Phase) -> None:
    kafka = settings.kafka
    wanted = expected_candles(phase.trades, phase.pairs, settings)
    started_ms = await publish_trades(kafka, topic_name(TRADES, prefix), phase)
    emitted = await candle_messages(kafka, topic_name(CANDLES, prefix), wanted, 900)
    engine = async_engine(settings.postgres)
    query = select(candles.c.pair, candles.c.interval_s, candles.c.window_start, candles.c.written_at).where(
        candles.c.pair.in_(phase.pairs), candles.c.window_start < datetime(2026, 1, 1, tzinfo=UTC)
    )
    deadline = time.monotonic() + 300
    try:
        while True:  # the sink's last micro-batches may still be on their way
            async with engine.connect() as conn:
                written = {
                    (r.pair, r.interval_s, r.window_start): r.written_at for r in await conn.execute(query)
                }
            if wanted <= written.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    finally:
        await engine.dispose()
    assert wanted <= written.keys(), f"{len(wanted - written.keys())} candles never reached the store"
    delays = [written[key].timestamp() * 1000 - ts for key, ts in emitted.items()]
    phase.candles = len(emitted)
    phase.trades_per_s = len(phase.trades) / ((max(emitted.values()) - started_ms) / 1000)
    phase.p50_ms, phase.p99_ms = (float(v) for v in np.percentile(delays, [50, 99]))
    print(
        f"{phase.name}: {len(phase.trades):,} trades, {phase.candles:,} candles, {phase.trades_per_s:,.0f} trades/s, "
        f"close to store p50 {phase.p50_ms:.1f} ms, p99 {phase.p99_ms:.1f} ms",
        file=sys.stderr,
    )


async def wait_until_idle(settings: Settings, prefix: str, timeout_s: float = 900) -> None:
    """Waits for the worker to finish what a phase left queued (indicators, predictions of a replay), so
    that the next phase's delays are not its backlog."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    group, ticks = topic_name(FAUST_APP_ID, prefix), topic_name(CANDLE_TICKS, prefix)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        lag = await consumer_lag(kafka, group)
        if not sum(behind for (topic, _), behind in lag.items() if topic != ticks):
            print(f"worker idle after {time.monotonic() - started:.0f} s", file=sys.stderr)
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"the worker still has records to process after {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--runs", type=int, default=RUNS, help="runs, each in a fresh process (default %(default)s)"
    )
    parser.add_argument(RUN_OUTPUT, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_output is not None:  # one run, in a process of its own
        args.run_output.write_text(json.dumps(asyncio.run(one_run(args.quick))))
        return
    runs = across_runs(repeat_runs(Path(__file__).resolve(), ["--quick"] if args.quick else [], args.runs))
    write_report(args.quick, args.runs, runs)


async def one_run(quick: bool) -> dict[str, Any]:
    """Every phase once, on a worker and topic prefix of its own: the figures as plain data."""
    settings = get_settings()
    scale = 1 if quick else 4
    run = uuid.uuid4().hex[:4].upper()
    # Pair names unique to this run, so rows of earlier runs in the shared store never count.
    busy, quiet, live, target = ([f"{kind}{i}{run}/USD" for i in "ABC"] for kind in ("B", "Q", "L", "T"))
    phases = [
        Phase("busy market, full speed", busy, market(busy, BUSY, 60 * scale, seed=11), None),
        Phase("quiet history replay, full speed", quiet, market(quiet, None, 3000 * scale, seed=12), None),
        Phase(
            f"busy market at {LIVE_RATE:,} trades/s", live, market(live, BUSY, 10 * scale, seed=13), LIVE_RATE
        ),
        Phase(
            f"busy market at {TARGET_RATE:,} trades/s",
            target,
            market(target, BUSY, 30 * scale, seed=14),
            TARGET_RATE,
        ),
    ]
    prefix = f"bench-stream-{run.lower()}-"
    await ensure_topics(settings.kafka.model_copy(update={"topic_prefix": prefix}))
    log_path = settings.local_dir.resolve() / "logs" / "bench-streaming.log"
    worker = start_worker(prefix, log_path)
    try:
        await asyncio.sleep(15)  # the worker joins its group and recovers (empty) tables
        for phase in phases:
            await run_phase(settings, prefix, phase)
            await wait_until_idle(settings, prefix)
    finally:
        worker.terminate()  # its supervisor stops it, killing it after a grace period
        worker.wait(60)
        await delete_topics_under(settings.kafka, (prefix,))
    # The supervisor logs each restart the stream guard asked for: a run with restarts measured them too.
    restarts = log_path.read_text(errors="replace").count("asked to be restarted")
    return {
        "phases": [
            {
                "name": p.name,
                "trades": len(p.trades),
                "candles": p.candles,
                "trades_per_s": p.trades_per_s,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
            }
            for p in phases
        ],
        "restarts": restarts,
    }


def write_report(quick: bool, runs: int, merged: dict[str, Any]) -> None:
    phases = merged["phases"]
    rows = "\n".join(
        f"| {p['name']} | {p['trades']:,} | {p['candles']:,} | {p['trades_per_s']:,.0f} | "
        f"{p['p50_ms'].with_range(1)} | {p['p99_ms'].with_range(1)} |"
        for p in phases
    )
    body = f"""
One Faust worker (candle builder at {get_settings().features.candle_intervals_s} s, indicator agent, prediction
agent, store sinks) on the local broker and PostgreSQL; trades published in records of up to
{TRADES_PER_RECORD} trades of one pair. trades/s = trades / (first trade produced -> last candle emitted);
close-to-store = candle message timestamp -> row `written_at`. The two full-speed phases measure
capacity, so their close-to-store delays are queueing behind the backlog; the paced phases show the
delay at 1,000 trades/s and at the 10,000 trades/s target. Each phase starts once the worker has
processed everything the previous one left. Worker restarts during the runs: {merged["restarts"].high:.0f}
at most in a run.

{runs} runs, each a fresh process of this script with its own worker, topic prefix and pairs, one after
the other on the same stack: the delays are the median with the range over the runs in brackets;
trades/s and candles are medians.

| phase | trades | candles | trades/s | close-to-store p50 (ms) | p99 (ms) |
|---|---|---|---|---|---|
{rows}
"""
    command = (
        "python bench/streaming.py"
        + (" --quick" if quick else "")
        + (f" --runs {runs}" if runs != RUNS else "")
    )
    figures = {
        "trades_per_s": phases[0]["trades_per_s"],
        "close_to_store_p99_ms": phases[2]["p99_ms"],
        "replay_trades_per_s": phases[1]["trades_per_s"],
        "saturated_close_to_store_p99_ms": phases[0]["p99_ms"],
        "close_to_store_p99_ms_at_10k": phases[3]["p99_ms"],
        "paced_10k_trades_per_s": phases[3]["trades_per_s"],
        "worker_restarts": merged["restarts"],
    }
    digits = {name: 0 if "trades_per_s" in name or name == "worker_restarts" else 1 for name in figures}
    publish("Streaming features: trades to store", command, body, median_figures(figures, digits))


if __name__ == "__main__":
    main()
