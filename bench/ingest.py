"""Ingest throughput and latency: replay exchange -> feed -> Kafka (acks=all, idempotent).

Two runs against the real local broker (`cryptopredict stack up --only kafka` first), for each venue of
`--venues` at once (default: kraken), each venue's replay exchange speaking that venue's protocol:
1. Throughput: each exchange in its own process replays a synthetic three-pair market as fast as its
   feed reads (`--speed max`); trades/s = trades acknowledged by Kafka / wall time from subscription
   to the last acknowledgement, in total and per venue (the feeds run side by side in this process).
2. Latency at Kraken's real rate: the busiest ten minutes of the real BTC/USD trade hour in
   ../shared/data (peak 61 trades in one second), or a synthetic market of the same rate when the data
   is absent, replayed at speed 1 in this process; latency = Kafka acknowledgement - the moment the
   exchange's clock made the trade happen. With several venues each replays the same trades at once.

Usage: .venv/bin/python bench/ingest.py [--quick] [--venues kraken,coinbase,binance]
Ends with one JSON line: {"trades_per_s": ..., "latency_p50_ms": ..., "latency_p99_ms": ...}, plus
"venues" and "trades_per_s_by_venue" when more than Kraken is read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.cli.demo import free_port  # noqa: E402
from cryptopredict.kafka_admin import delete_topics_under, ensure_topics  # noqa: E402
from cryptopredict.kraken.sources import csv_trades, load_trades, synthetic_market  # noqa: E402
from cryptopredict.models import Trade, TradeBatch  # noqa: E402
from cryptopredict.settings import Settings, get_settings  # noqa: E402
from cryptopredict.simulators import replay_exchange  # noqa: E402
from cryptopredict.topics import EXCHANGES  # noqa: E402
from streams.trade_feed import run_feed, trade_client  # noqa: E402

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
# Binance quotes these coins in USDT.
VENUE_PAIRS = {"kraken": PAIRS, "coinbase": PAIRS, "binance": [p.replace("/USD", "/USDT") for p in PAIRS]}
TRADES_PER_MINUTE = 100.0
REAL_TRADES = ROOT.parent / "shared" / "data" / "kraken" / "BTCUSD_trades_2019-07-01T00.csv"


def isolated(settings: Settings, venues: list[str], pairs: dict[str, list[str]]) -> Settings:
    sections = {venue: settings.venue(venue).model_copy(update={"pairs": pairs[venue]}) for venue in venues}
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}-"}),
            "venues": venues,
            **sections,
        }
    )


def start_exchange(venue: str, minutes: int, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptopredict.cli",
            "exchange",
            "--venue",
            venue,
            "--source",
            "synthetic",
            "--pairs",
            ",".join(VENUE_PAIRS[venue]),
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


def drain(pipe: IO[bytes]) -> None:
    for _ in pipe:
        pass


async def throughput(settings: Settings, venues: list[str], minutes: int) -> dict[str, tuple[float, int]]:
    """Per venue: (trades/s, trades), the feeds of all venues running at once."""
    settings = isolated(settings, venues, VENUE_PAIRS)
    await ensure_topics(settings.kafka)
    ports = {venue: free_port() for venue in venues}
    exchanges = {venue: start_exchange(venue, minutes, ports[venue]) for venue in venues}
    try:
        urls = {}
        for venue, exchange in exchanges.items():
            assert exchange.stderr is not None
            line = b""
            while b"replay exchange at" not in line:  # generated and listening
                line = exchange.stderr.readline()
                if exchange.poll() is not None:
                    raise RuntimeError(f"the {venue} exchange did not start")
            # "... replay exchange at <ws url> (REST <rest url>), N trades"
            ws_url, rest_url = re.search(rb"at (\S+) \(REST (\S+)\)", line).groups()  # type: ignore[union-attr]
            urls[venue] = (ws_url.decode(), rest_url.decode())
            # The rest of its log is read and dropped: a pipe nobody reads stops the exchange once full.
            threading.Thread(target=drain, args=(exchange.stderr,), daemon=True).start()
        started = time.monotonic()

        async def one(venue: str) -> tuple[float, int]:
            expected = synthetic_count(VENUE_PAIRS[venue], minutes)
            acks: list[float] = []
            counts = await run_feed(
                settings,
                max_trades=expected,
                client=trade_client(settings, *urls[venue], venue),
                on_ack=lambda batch, at: acks.extend([at] * len(batch.trades)),
            )
            assert counts["trades"] == expected == len(acks), (venue, counts, expected, len(acks))
            return expected / (max(acks) - started), expected

        results = await asyncio.gather(*(one(venue) for venue in venues))
        return dict(zip(venues, results, strict=True))
    finally:
        for exchange in exchanges.values():
            exchange.terminate()
            exchange.wait()
        await delete_topics_under(settings.kafka, (settings.kafka.topic_prefix,))


def synthetic_count(pairs: list[str], minutes: int) -> int:
    # The exchange subprocess generates the same seeded market (seed 7, start as its CLI default).
    from cryptopredict.cli import DEMO_ANCHOR

    trades = load_trades(
        "synthetic", pairs, start=DEMO_ANCHOR, minutes=minutes, trades_per_minute=TRADES_PER_MINUTE
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


async def latency(settings: Settings, venues: list[str], seconds: int) -> tuple[np.ndarray, str]:
    """Every venue replays the same real-rate trades at once, each through its own protocol and feed."""
    trades, described = real_rate_trades(seconds)
    settings = isolated(settings, venues, {venue: VENUE_PAIRS[venue][:1] for venue in venues})
    await ensure_topics(settings.kafka)
    latencies: list[float] = []

    async def one(venue: str) -> None:
        pair = VENUE_PAIRS[venue][0]
        venue_trades = [t.model_copy(update={"pair": pair}) for t in trades]
        exchange = replay_exchange(venue)(venue_trades, speed=1.0)
        await exchange.start()

        def on_ack(batch: TradeBatch, at: float) -> None:
            clock = exchange.clock
            assert clock.origin_event is not None
            for trade in batch.trades:
                happened = clock.origin_wall + (trade.timestamp - clock.origin_event).total_seconds()
                latencies.append((at - happened) * 1000)

        try:
            client = trade_client(settings, exchange.url, exchange.rest_url, venue)
            await run_feed(settings, max_trades=len(trades), client=client, on_ack=on_ack)
        finally:
            await exchange.stop()

    try:
        await asyncio.gather(*(one(venue) for venue in venues))
    finally:
        await delete_topics_under(settings.kafka, (settings.kafka.topic_prefix,))
    return np.array(latencies), described


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument(
        "--venues", default="kraken", help=f"comma list of venues read at once, of {', '.join(EXCHANGES)}"
    )
    args = parser.parse_args()
    venues = [v.strip() for v in args.venues.split(",") if v.strip()]
    if unknown := sorted(set(venues) - set(EXCHANGES)):
        parser.error(f"unknown venue(s) {unknown}; known: {', '.join(EXCHANGES)}")
    settings = get_settings()
    minutes, seconds = (100, 60) if args.quick else (500, 600)
    by_venue = await throughput(settings, venues, minutes)
    total = sum(count for _, count in by_venue.values())
    # The feeds ran side by side from one start: the total rate is all trades over the slowest venue's time.
    rate = total / max(count / venue_rate for venue_rate, count in by_venue.values())
    for venue, (venue_rate, count) in by_venue.items():
        print(f"throughput {venue}: {venue_rate:,.0f} trades/s over {count:,} trades", file=sys.stderr)
    print(f"throughput: {rate:,.0f} trades/s over {total:,} trades", file=sys.stderr)
    latencies, described = await latency(settings, venues, seconds)
    p50, p99, worst = np.percentile(latencies, [50, 99, 100])
    print(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms", file=sys.stderr)
    per_venue = (
        "".join(f"| {venue} throughput | {r:,.0f} trades/s |\n" for venue, (r, _) in by_venue.items())
        + "| (a venue's figure: its trades over the time from the common start to its own last "
        "acknowledgement; the total: all trades over the slowest venue's time) | |\n"
        if len(venues) > 1
        else ""
    )
    body = f"""
Replay exchange -> feed (`streams/trade_feed.py`) -> Kafka with acks=all and idempotence, on the local
single-node broker. The exchange, the feed and the broker share the machine's 2 cores.

Venues read at once: {", ".join(venues)} (each venue's replay exchange speaks its protocol).

| figure | value |
|---|---|
| throughput, each exchange at max speed in its own process ({total:,} trades, 3 pairs per venue) | {rate:,.0f} trades/s |
{per_venue}| latency p50, {described}, speed 1{" on each venue at once" if len(venues) > 1 else ""} | {p50:.2f} ms |
| latency p99 | {p99:.2f} ms |
| latency max | {worst:.2f} ms |

Latency runs from the moment the exchange's clock makes a trade happen to the broker's acknowledgement
of that trade, so it includes the WebSocket hop, validation and the Kafka round trip.
"""
    command = "python bench/ingest.py" + (" --quick" if args.quick else "")
    figures: dict[str, object] = {
        "trades_per_s": round(rate),
        "latency_p50_ms": round(p50, 3),
        "latency_p99_ms": round(p99, 3),
    }
    title = "Ingest: replay exchange to Kafka"
    if venues != ["kraken"]:
        command += f" --venues {','.join(venues)}"
        title = "Ingest: several venues at once"
        figures |= {
            "venues": venues,
            "trades_per_s_by_venue": {v: round(r) for v, (r, _) in by_venue.items()},
        }
    publish(title, command, body, figures)


if __name__ == "__main__":
    asyncio.run(main())
