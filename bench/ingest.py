"""Ingest throughput and latency: replay exchange -> feed -> Kafka (acks=all, idempotent).

Two runs against the real local broker (`cryptopredict stack up --only kafka` first):
1. Throughput: the exchange in its own process replays a synthetic three-pair market as fast as the
   feed reads (`--speed max`); trades/s = trades acknowledged by Kafka / wall time from subscription
   to the last acknowledgement.
2. Latency at Kraken's real rate: the busiest ten minutes of the real BTC/USD trade hour in
   ../shared/data (peak 61 trades in one second), or a synthetic market of the same rate when the data
   is absent, replayed at speed 1 in this process; latency = Kafka acknowledgement - the moment the
   exchange's clock made the trade happen.

Usage: .venv/bin/python bench/ingest.py [--quick]
Ends with one JSON line: {"trades_per_s": ..., "latency_p50_ms": ..., "latency_p99_ms": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.cli.demo import free_port  # noqa: E402
from cryptopredict.kafka_admin import ensure_topics  # noqa: E402
from cryptopredict.kraken.sources import csv_trades, load_trades, synthetic_market  # noqa: E402
from cryptopredict.models import Trade, TradeBatch  # noqa: E402
from cryptopredict.settings import Settings, get_settings  # noqa: E402
from cryptopredict.simulators.exchange import ReplayExchange  # noqa: E402
from streams.trade_feed import run_feed  # noqa: E402

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
TRADES_PER_MINUTE = 100.0
REAL_TRADES = ROOT.parent / "shared" / "data" / "kraken" / "BTCUSD_trades_2019-07-01T00.csv"


def isolated(settings: Settings, pairs: list[str]) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}-"}),
            "kraken": settings.kraken.model_copy(update={"pairs": pairs}),
        }
    )


def start_exchange(minutes: int, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptopredict.cli",
            "exchange",
            "--source",
            "synthetic",
            "--pairs",
            ",".join(PAIRS),
            "--minutes",
            str(minutes),
            "--trades-per-minute",
            str(TRADES_PER_MINUTE),
            "--speed",
            "max",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


async def throughput(settings: Settings, minutes: int) -> tuple[float, int]:
    settings = isolated(settings, PAIRS)
    await ensure_topics(settings.kafka)
    port = free_port()
    exchange = start_exchange(minutes, port)
    try:
        assert exchange.stderr is not None
        while b"replay exchange at" not in exchange.stderr.readline():  # generated and listening
            if exchange.poll() is not None:
                raise RuntimeError("exchange did not start")
        expected = synthetic_count(minutes)
        acks: list[float] = []
        started = time.monotonic()
        counts = await run_feed(
            settings,
            f"ws://127.0.0.1:{port}/v2",
            max_trades=expected,
            rest_url=f"http://127.0.0.1:{port}",
            on_ack=lambda batch, at: acks.extend([at] * len(batch.trades)),
        )
        assert counts["trades"] == expected == len(acks), (counts, expected, len(acks))
        return expected / (max(acks) - started), expected
    finally:
        exchange.terminate()
        exchange.wait()


def synthetic_count(minutes: int) -> int:
    # The exchange subprocess generates the same seeded market (seed 7, start as its CLI default).
    from cryptopredict.cli import DEMO_ANCHOR

    trades = load_trades(
        "synthetic", PAIRS, start=DEMO_ANCHOR, minutes=minutes, trades_per_minute=TRADES_PER_MINUTE
    )
    return len(trades)


def real_rate_trades(seconds: int) -> tuple[list[Trade], str]:
    if REAL_TRADES.exists():
        trades = list(csv_trades(REAL_TRADES, "BTC/USD"))
        times = np.array([t.timestamp.timestamp() for t in trades])
        counts = [np.sum((times >= s) & (times < s + seconds)) for s in times]
        first = times[int(np.argmax(counts))]
        window = [t for t in trades if first <= t.timestamp.timestamp() < first + seconds]
        return window, f"the busiest {seconds} s of the real BTC/USD hour ({len(window)} trades)"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    window = [t for t in synthetic_market(["BTC/USD"], start, 1 + seconds // 60, seed=7)]
    window = [t for t in window if t.timestamp < start + timedelta(seconds=seconds)]
    return window, f"{seconds} s of a synthetic BTC/USD market ({len(window)} trades)"


async def latency(settings: Settings, seconds: int) -> tuple[np.ndarray, str]:
    trades, described = real_rate_trades(seconds)
    settings = isolated(settings, ["BTC/USD"])
    await ensure_topics(settings.kafka)
    exchange = ReplayExchange(trades, speed=1.0)
    await exchange.start()
    latencies: list[float] = []

    def on_ack(batch: TradeBatch, at: float) -> None:
        clock = exchange.clock
        assert clock.origin_event is not None
        for trade in batch.trades:
            happened = clock.origin_wall + (trade.timestamp - clock.origin_event).total_seconds()
            latencies.append((at - happened) * 1000)

    try:
        await run_feed(
            settings, exchange.url, max_trades=len(trades), rest_url=exchange.rest_url, on_ack=on_ack
        )
    finally:
        await exchange.stop()
    return np.array(latencies), described


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    args = parser.parse_args()
    settings = get_settings()
    minutes, seconds = (100, 60) if args.quick else (500, 600)
    rate, total = await throughput(settings, minutes)
    print(f"throughput: {rate:,.0f} trades/s over {total:,} trades", file=sys.stderr)
    latencies, described = await latency(settings, seconds)
    p50, p99, worst = np.percentile(latencies, [50, 99, 100])
    print(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms", file=sys.stderr)
    body = f"""
Replay exchange -> feed (`streams/trade_feed.py`) -> Kafka with acks=all and idempotence, on the local
single-node broker. The exchange, the feed and the broker share the machine's 2 cores.

| figure | value |
|---|---|
| throughput, exchange at max speed in its own process ({total:,} trades, 3 pairs) | {rate:,.0f} trades/s |
| latency p50, {described}, speed 1 | {p50:.2f} ms |
| latency p99 | {p99:.2f} ms |
| latency max | {worst:.2f} ms |

Latency runs from the moment the exchange's clock makes a trade happen to the broker's acknowledgement
of that trade, so it includes the WebSocket hop, validation and the Kafka round trip.
"""
    command = "python bench/ingest.py" + (" --quick" if args.quick else "")
    publish(
        "Ingest: replay exchange to Kafka",
        command,
        body,
        {"trades_per_s": round(rate), "latency_p50_ms": round(p50, 3), "latency_p99_ms": round(p99, 3)},
    )


if __name__ == "__main__":
    asyncio.run(main())
