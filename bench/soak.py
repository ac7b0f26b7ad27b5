"""Soak: the live path under a steady heavy market for 30 minutes (3 with --quick), watching for leaks,
growing lag, slowing delivery, and lost or repeated predictions.

Trades of 5 pairs (names unique to the run) at 2,000 a second in all, about 30x Kraken's busiest BTC/USD
second, are produced to the run's own `trades` topic (its own topic prefix) the way the feed publishes
them: one record per exchange message, here every 0.1 s per pair, timestamped with the wall clock, so
1-minute candles close in real time. The feed and the replay exchange are not in the path (a replay
exchange holds its whole market in memory up front; 3.6 million trades would be its own leak). One
stream worker (`python -m streams worker`: candles, indicators, the prediction agent with a persistence
champion per pair, store sinks), the gRPC server, and the Go stream edge in front of it, as users get
it; 200 StreamPredictions subscribers (the Go `stream-subscribers` of infra/go-bench, 50 streams to a
connection) on the edge, each streaming the 5 pairs at 1 minute.

Figures, over the run (from the moment every subscriber has its first message):
- RSS growth per process (stream supervisor, stream worker = the supervisor's child and its children,
  gRPC server, stream edge): VmRSS from /proc/<pid>/status every few seconds, the slope of a
  least-squares line through the samples after a 10-minute warm-up (1 minute with --quick), MB/h;
- the highest consumer lag of the worker's group (records behind the end, summed over its partitions;
  committed offsets against end offsets, as the worker's own lag gauge reads them);
- candle close -> client: client receipt - the Kafka timestamp of the 1-minute candle's message, p99
  of the candles closed in the first and in the last 5 minutes (1 minute each with --quick: one close
  per pair; the run starts half a minute past a close, so each window holds whole minutes of closes);
- lost / duplicated: every 1-minute candle of each pair closed during the run (known from the trades
  sent) must reach each subscriber exactly once as a prediction.

Usage: .venv/bin/python bench/soak.py [--quick]   (needs `cryptopredict stack up`)
Ends with one JSON line: {"rss_growth_mb_per_h", "max_lag_records", "p99_first_ms", "p99_last_ms",
"lost", "duplicated"}
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/soak.py`, this file's directory comes first on sys.path, and bench/grpc.py would
# shadow the grpc package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench.grpc import (  # noqa: E402
    INTERVAL_S,
    T0,
    Services,
    Subscribers,
    ensure_champions,
    start_edge,
    summary,
    wait_serving,
)
from bench.report import publish  # noqa: E402
from cryptopredict.cli.demo import free_port  # noqa: E402
from cryptopredict.models import Trade, TradeBatch  # noqa: E402

PAIRS = 5
TRADES_PER_S = 2000
SUBSCRIBERS = 200
RECORD_EVERY_S = 0.1  # one trades record per pair this often, as an exchange message would bring them
SAMPLE_EVERY_S = 5.0  # RSS and lag samples
DRAIN_S = 10.0  # after the last trade, time for the last predictions to reach the subscribers
TARGET_RSS_MB_PER_H = 50.0
TARGET_P99_RATIO = 1.5


@dataclass(frozen=True)
class Profile:
    duration_s: float  # from every subscriber ready to the last trade
    warmup_s: float  # RSS samples before this are left out of the slope
    window_s: float  # the first and last windows of candle closes whose p99 is compared


FULL = Profile(duration_s=1800, warmup_s=600, window_s=300)
QUICK = Profile(duration_s=180, warmup_s=60, window_s=60)


# ---------------------------------------------------------------- pure figures


def rss_growth_mb_per_h(samples: Sequence[tuple[float, float]], after_s: float) -> float:
    """Slope (MB/h, MB = 2**20 bytes) of the least-squares line through the (seconds, kB) samples taken
    at or after `after_s`; NaN with fewer than two."""
    points = [(t, kb) for t, kb in samples if t >= after_s]
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return float("nan")
    times, kbs = np.array(points, dtype=float).T
    slope_kb_per_s = float(np.polyfit(times, kbs, 1)[0])
    return slope_kb_per_s * 3600 / 1024


def run_start(now_s: float, grace_s: float) -> float:
    """The first moment after `now_s` that is half a minute past a 1-minute candle's close
    (window end + grace)."""
    offset = grace_s + INTERVAL_S / 2
    return math.floor((now_s - offset) / INTERVAL_S + 1) * INTERVAL_S + offset


def closed_windows(
    window_starts: dict[str, set[int]], last_trade_s: dict[str, float], grace_s: float, from_s: float
) -> set[tuple[str, int]]:
    """(pair, window start s) of the 1-minute windows that held trades and that a later trade closed
    (one past window end + grace), where that closing moment is at or after `from_s`."""
    return {
        (pair, start)
        for pair, starts in window_starts.items()
        for start in starts
        if from_s <= start + INTERVAL_S + grace_s <= last_trade_s[pair]
    }


def delivery(
    expected: set[tuple[str, int]], streams: int, received: Iterable[tuple[int, str, int]]
) -> tuple[int, int]:
    """(lost, duplicated): of the expected (pair, window start) predictions at each of `streams`
    subscribers, how many never arrived, and how many arrived more than once (the extra copies);
    `received` is (stream, pair, window start) per message, messages of other windows ignored."""
    copies = Counter(r for r in received if (r[1], r[2]) in expected)
    lost = streams * len(expected) - len(copies)
    return lost, sum(n - 1 for n in copies.values())


def p99_between(latencies: Iterable[tuple[float, float]], start_s: float, end_s: float) -> float:
    """p99 (ms) of the (candle close s, latency ms) samples whose close is in [start_s, end_s)."""
    return summary([ms for closed, ms in latencies if start_s <= closed < end_s])["p99"]


def verdicts(figures: dict[str, Any], per_process: dict[str, float]) -> list[tuple[str, str, str, bool]]:
    """(target, bound, measured, met) of each target."""
    ratio = figures["p99_last_ms"] / figures["p99_first_ms"] if figures["p99_first_ms"] else float("nan")
    rows = [
        ("lost predictions", "0", str(figures["lost"]), figures["lost"] == 0),
        ("duplicated predictions", "0", str(figures["duplicated"]), figures["duplicated"] == 0),
    ]
    rows += [
        (
            f"RSS growth, {name}",
            f"< {TARGET_RSS_MB_PER_H:g} MB/h",
            f"{mb:+.1f} MB/h",
            mb < TARGET_RSS_MB_PER_H,
        )
        for name, mb in per_process.items()
    ]
    rows.append(
        (
            "p99 close -> client, last window / first",
            f"<= {TARGET_P99_RATIO:g}x",
            f"{ratio:.2f}x ({figures['p99_last_ms']:.1f} / {figures['p99_first_ms']:.1f} ms)",
            ratio <= TARGET_P99_RATIO,
        )
    )
    return rows


# ---------------------------------------------------------------- the market


@dataclass
class Market:
    """Trades of `pairs` made on the fly with the wall clock as event time: a seeded random walk per
    pair. Remembers which windows held trades and the last trade time of each pair."""

    pairs: list[str]
    seed: int = 17
    rng: random.Random = field(init=False)
    prices: dict[str, float] = field(init=False)
    trade_ids: dict[str, int] = field(init=False)
    window_starts: dict[str, set[int]] = field(init=False)
    last_trade_s: dict[str, float] = field(init=False)
    sent: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.prices = {pair: 100.0 * (i + 1) for i, pair in enumerate(self.pairs)}
        self.trade_ids = dict.fromkeys(self.pairs, 0)
        self.window_starts = {pair: set() for pair in self.pairs}
        self.last_trade_s = dict.fromkeys(self.pairs, 0.0)

    def batch(self, pair: str, count: int, since_s: float, now_s: float) -> TradeBatch:
        """`count` trades of `pair` spread over (since_s, now_s]."""
        ingested = datetime.fromtimestamp(now_s, UTC)
        trades = []
        for i in range(count):
            at = since_s + (now_s - since_s) * (i + 1) / count
            self.prices[pair] *= math.exp(self.rng.gauss(0.0, 2e-4))
            self.trade_ids[pair] += 1
            trades.append(
                Trade(
                    pair=pair,
                    trade_id=self.trade_ids[pair],
                    price=round(self.prices[pair], 4),
                    qty=round(self.rng.uniform(0.001, 0.5), 6),
                    side=self.rng.choice(("buy", "sell")),
                    timestamp=datetime.fromtimestamp(at, UTC),
                    ingested_at=ingested,
                )
            )
            self.window_starts[pair].add(int(at // INTERVAL_S) * INTERVAL_S)
        self.last_trade_s[pair] = now_s
        self.sent += count
        return TradeBatch(pair=pair, trades=trades)


async def drive_market(market: Market, publisher: Any, topic: str, until: asyncio.Event) -> None:
    """Publishes TRADES_PER_S trades a second over the pairs, a record per pair every RECORD_EVERY_S,
    until `until` is set; catches up after a slow tick so the average rate holds."""
    per_pair = TRADES_PER_S / len(market.pairs)
    started = last = time.time()
    owed = 0.0
    while not until.is_set():
        await asyncio.sleep(max(0.0, last + RECORD_EVERY_S - time.time()))
        now = time.time()
        owed = per_pair * (now - started) - market.sent / len(market.pairs)
        count = int(owed)
        if count > 0:
            for pair in market.pairs:
                batch = market.batch(pair, count, last, now)
                await publisher.publish(topic, batch.to_json_bytes(), key=pair.encode())
            last = now
    await publisher.flush()


# ---------------------------------------------------------------- samplers


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # a zombie has no VmRSS


def tree_rss_kb(root: psutil.Process, include_root: bool = True) -> tuple[int, list[int]]:
    """VmRSS of `root` (or not) and all its descendants, and their pids."""
    processes = ([root] if include_root else []) + root.children(recursive=True)
    total, pids = 0, []
    for process in processes:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += vm_rss_kb(process.pid)
            pids.append(process.pid)
    return total, pids


@dataclass
class Samples:
    t0: float = 0.0  # wall time the run started (every subscriber ready); samples before it are kept too
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    worker_pids: set[int] = field(default_factory=set)
    lag: list[tuple[float, int]] = field(default_factory=list)


async def sample(services: Services, kafka: Any, group: str, samples: Samples) -> None:
    """Every SAMPLE_EVERY_S: each process's RSS (tree), and the worker group's lag."""
    from cryptopredict.kafka_admin import consumer_lag

    roots = {name: psutil.Process(p.pid) for name, p in services.processes.items()}
    while True:
        at = time.time() - samples.t0
        figures = {
            "stream supervisor": vm_rss_kb(roots["worker"].pid),
            "gRPC server": tree_rss_kb(roots["server"])[0],
            "stream edge": tree_rss_kb(roots["edge"])[0],
        }
        worker_kb, worker_pids = tree_rss_kb(roots["worker"], include_root=False)
        if worker_pids:
            figures["stream worker"] = worker_kb
            samples.worker_pids.add(worker_pids[0])
        for name, kb in figures.items():
            samples.rss.setdefault(name, []).append((at, kb))
        with contextlib.suppress(Exception):  # the broker briefly busy: one sample fewer
            lag = await consumer_lag(kafka, group)
            samples.lag.append((at, sum(lag.values())))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def read_candle_closes(
    kafka: Any, topic: str, pairs: set[str], closes: dict[tuple[str, int], float]
) -> None:
    """(pair, window start s) -> Kafka timestamp (s) of the first message of each 1-minute candle."""
    from aiokafka import AIOKafkaConsumer

    from cryptopredict.kafka_client import client_kwargs
    from cryptopredict.models import Candle

    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka), auto_offset_reset="earliest")
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    candle = Candle.model_validate_json(r.value)
                    if candle.interval_s == INTERVAL_S and candle.pair in pairs:
                        key = (candle.pair, int(candle.window_start.timestamp()))
                        closes.setdefault(key, r.timestamp / 1000)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- clean-up


async def remove_run(settings: Any, prefix: str, pairs: list[str]) -> None:
    """The run's topics (its prefix: its own and Faust's), registered models (and their runs) and store
    rows."""
    import mlflow
    from sqlalchemy import delete

    from cryptopredict.kafka_admin import delete_topics_under
    from cryptopredict.store.candles import async_engine
    from cryptopredict.store.schema import metadata
    from cryptopredict.topics import registered_model_name

    await delete_topics_under(settings.kafka, (prefix,))
    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    for pair in pairs:
        name = registered_model_name(pair, INTERVAL_S, 1)
        with contextlib.suppress(Exception):  # a run that failed before registering it
            for version in client.search_model_versions(f"name='{name}'"):
                if version.run_id:
                    client.delete_run(version.run_id)
            client.delete_registered_model(name)
    engine = async_engine(settings.postgres)
    try:
        async with engine.begin() as conn:
            for table in metadata.tables.values():
                if "pair" in table.c:
                    await conn.execute(delete(table).where(table.c.pair.in_(pairs)))
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- the run


def progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
    )


def status_line(market: Market, samples: Samples, started: float) -> str:
    rate = market.sent / max(time.time() - started, 1e-9)
    lag = samples.lag[-1][1] if samples.lag else 0
    worker = samples.rss.get("stream worker", [(0.0, 0.0)])[-1][1] / 1024
    return f"{market.sent:,} trades ({rate:,.0f}/s), lag {lag:,}, worker RSS {worker:,.0f} MB"


def run_pairs(run: str) -> list[str]:
    """The run's pairs: names no live target has, so nothing of one is touched."""
    return [f"S{letter}{run.upper()}/USD" for letter in "ABCDE"[:PAIRS]]


async def soak(settings: Any, profile: Profile, run: str) -> dict[str, Any]:
    from cryptopredict.kafka_admin import ensure_topics
    from cryptopredict.publisher import ReliablePublisher
    from cryptopredict.stack.tools import install_go_tools
    from cryptopredict.topics import CANDLES, FAUST_APP_ID, TRADES, topic_name

    pairs = run_pairs(run)
    prefix = f"bench-soak-{run}-"
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    tools = install_go_tools(settings.local_dir.resolve() / "bin", ["stream-subscribers", "stream-edge"])
    await ensure_topics(kafka)
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout ends with the JSON line
        await asyncio.to_thread(ensure_champions, settings, pairs)
    port = free_port()
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_KRAKEN__PAIRS": json.dumps(pairs),
        "CRYPTOPREDICT_GRPC__HOST": "127.0.0.1",
        "CRYPTOPREDICT_GRPC__PORT": str(port),
        # Their /metrics endpoints on free ports, clear of a stack's processes on the default ones.
        "CRYPTOPREDICT_METRICS__GRPC_PORT": "0",
        "CRYPTOPREDICT_METRICS__STREAM_PORT": "0",
    }
    log_dir = settings.local_dir.resolve() / "logs" / f"bench-soak-{run}"
    services = Services(env, log_dir)
    samples = Samples(t0=time.time())
    closes: dict[tuple[str, int], float] = {}
    market = Market(pairs)
    stop_trades = asyncio.Event()
    publisher = ReliablePublisher(kafka)
    tasks: list[asyncio.Task[None]] = []
    subscribers: Subscribers | None = None
    try:
        services.start("server", "-m", "grpc_server")
        await wait_serving(f"127.0.0.1:{port}", services)
        edge = start_edge(services, settings, port, tools["stream-edge"])
        await wait_serving(edge, services)
        services.start("worker", "-m", "streams", "worker", "-l", "warn")
        await publisher.start()
        started = time.time()
        tasks = [
            asyncio.create_task(drive_market(market, publisher, topic_name(TRADES, prefix), stop_trades)),
            asyncio.create_task(sample(services, kafka, topic_name(FAUST_APP_ID, prefix), samples)),
            asyncio.create_task(read_candle_closes(kafka, topic_name(CANDLES, prefix), set(pairs), closes)),
        ]
        with progress_bar() as progress:
            # The first prediction comes with the first 1-minute close (the worker joins its group and
            # loads the champions meanwhile); every stream's first message is its proof of subscription.
            waiting = progress.add_task("until every subscriber has a prediction", total=None, status="")
            subscribers = await Subscribers.start(tools["stream-subscribers"], edge, SUBSCRIBERS, pairs)
            deadline = time.time() + 240
            while not subscribers.poll_ready():
                services.check()
                for task in tasks:
                    if task.done():
                        task.result()
                if time.time() > deadline:
                    raise TimeoutError(f"not every subscriber had a prediction within 240 s; see {log_dir}")
                progress.update(waiting, status=status_line(market, samples, started))
                await asyncio.sleep(1)
            # The run starts half a minute past a candle close, so that each comparison window holds
            # whole minutes of closes however late a close comes.
            t0 = run_start(time.time(), settings.features.grace_s)
            while time.time() < t0:
                services.check()
                progress.update(waiting, status=status_line(market, samples, started))
                await asyncio.sleep(min(1.0, max(0.0, t0 - time.time())))
            progress.remove_task(waiting)
            shift = t0 - samples.t0  # samples so far move to the run's clock
            samples.t0 = t0
            for series in samples.rss.values():
                series[:] = [(at - shift, kb) for at, kb in series]
            samples.lag[:] = [(at - shift, n) for at, n in samples.lag]
            running = progress.add_task("soak", total=profile.duration_s, status="")
            while (elapsed := time.time() - t0) < profile.duration_s:
                services.check()
                for task in tasks:
                    if task.done():
                        task.result()
                progress.update(running, completed=elapsed, status=status_line(market, samples, started))
                await asyncio.sleep(1)
            stop_trades.set()
            await tasks[0]
            t_end = time.time()
            progress.update(running, completed=profile.duration_s, status="draining")
            await asyncio.sleep(DRAIN_S)
        records = await subscribers.results()
        subscribers = None
    finally:
        stop_trades.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if subscribers is not None and subscribers.process.returncode is None:
            subscribers.process.kill()
        await publisher.stop()
        services.stop()
    restarts = sum(
        (log_dir / name).read_text(errors="replace").count("asked to be restarted")
        for name in os.listdir(log_dir)
        if "worker" in name
    )
    expected = closed_windows(market.window_starts, market.last_trade_s, settings.features.grace_s, t0)
    t0_minute = T0.timestamp()
    received = [
        (stream, pair, int(t0_minute + minute * INTERVAL_S), at) for stream, pair, minute, at, _ in records
    ]
    lost, duplicated = delivery(expected, SUBSCRIBERS, [(s, p, w) for s, p, w, _ in received])
    latencies = [
        (closes[(pair, window)], (at - closes[(pair, window)]) * 1000)
        for _, pair, window, at in received
        if (pair, window) in expected and (pair, window) in closes
    ]
    return {
        "profile": profile,
        "pairs": pairs,
        "samples": samples,
        "t_end": t_end - t0,
        "trades": market.sent,
        "trades_per_s": market.sent / (t_end - started),
        "expected": expected,
        "candles_seen": len([k for k in closes if k in expected]),
        "lost": lost,
        "duplicated": duplicated,
        "latencies": [(closed - t0, ms) for closed, ms in latencies],
        "restarts": restarts,
        "worker_pids": len(samples.worker_pids),
        "prefix": prefix,
    }


def trend_row(latencies: list[tuple[float, float]], samples: Samples, start: float, end: float) -> str:
    lat = summary([ms for closed, ms in latencies if start <= closed < end])
    lag = max((n for at, n in samples.lag if start <= at < end), default=0)
    rss = [kb for at, kb in samples.rss.get("stream worker", []) if start <= at < end]
    return (
        f"| {start / 60:.0f}-{end / 60:.0f} | {lat['n']:,} | {lat['p50']:,.1f} | {lat['p99']:,.1f} | "
        f"{lat['max']:,.1f} | {lag:,} | {rss[-1] / 1024 if rss else float('nan'):,.0f} |"
    )


def report(result: dict[str, Any], quick: bool) -> None:
    profile: Profile = result["profile"]
    samples: Samples = result["samples"]
    end = result["t_end"]
    per_process = {
        name: rss_growth_mb_per_h(series, profile.warmup_s) for name, series in sorted(samples.rss.items())
    }
    latencies = result["latencies"]
    first = p99_between(latencies, 0.0, profile.window_s)
    last = p99_between(latencies, end - profile.window_s, end)
    overall = summary([ms for _, ms in latencies])
    run_lag = [n for at, n in samples.lag if at >= 0]
    max_lag = max(run_lag, default=0)
    start_lag = max((n for at, n in samples.lag if at < 0), default=0)
    figures = {
        "rss_growth_mb_per_h": round(max(per_process.values()), 1),
        "max_lag_records": max_lag,
        "p99_first_ms": round(first, 1),
        "p99_last_ms": round(last, 1),
        "lost": result["lost"],
        "duplicated": result["duplicated"],
    }

    def rss_at(series: list[tuple[float, float]], at: float) -> float:
        return min(series, key=lambda s: abs(s[0] - at))[1] / 1024

    process_rows = "\n".join(
        f"| {name} | {rss_at(samples.rss[name], profile.warmup_s):,.0f} | {rss_at(samples.rss[name], end):,.0f} | "
        f"{mb:+.1f} |"
        for name, mb in per_process.items()
    )
    for name, mb in per_process.items():
        print(f"RSS growth {name}: {mb:+.1f} MB/h", file=sys.stderr)
    rows = verdicts(figures, per_process)
    for target, bound, measured, met in rows:
        print(f"{'pass' if met else 'FAIL'}: {target} {measured} (target {bound})", file=sys.stderr)
    target_rows = "\n".join(
        f"| {target} | {bound} | {measured} | {'pass' if met else 'fail'} |"
        for target, bound, measured, met in rows
    )
    window = f"{profile.window_s / 60:g} minute" + ("s" if profile.window_s != 60 else "")
    starts = [float(start) for start in np.arange(0.0, end - 1, profile.window_s)]
    trend_rows = "\n".join(
        trend_row(latencies, samples, start, stop)
        for start, stop in zip(starts, [*starts[1:], end], strict=True)
    )
    lag_note = (
        f"{max_lag:,} records over the run ({len(run_lag)} samples); {start_lag:,} while the worker "
        "started (joining its group, loading the champions), before the run"
    )
    body = f"""
{result["trades"]:,} trades of {PAIRS} pairs ({result["trades_per_s"]:,.0f} trades/s in all) produced to the
run's own `trades` topic, a record per pair every {RECORD_EVERY_S:g} s, timestamped with the wall clock
(the feed and the replay exchange are not in the path); one stream worker (every agent, a persistence
champion per pair), the gRPC server and the Go stream edge; {SUBSCRIBERS} StreamPredictions
subscribers on the edge (a Go process, 50 streams to a connection), each streaming the {PAIRS} pairs.
Run: {profile.duration_s / 60:g} minutes from the moment every subscriber had its first prediction.
The machine's 2 cores were shared with the local stack and with other work running at the same time
(other agents' builds and tests), so latencies include that contention.

| target | bound | measured | |
|---|---|---|---|
{target_rows}

**RSS per process** (VmRSS of the process and its children, sampled every {SAMPLE_EVERY_S:g} s; growth =
slope of a least-squares line through the samples after a {profile.warmup_s / 60:g}-minute warm-up). The
stream worker is the supervisor's child; worker processes seen: {result["worker_pids"]}, restarts asked
for: {result["restarts"]}.

| process | RSS after warm-up (MB) | RSS at the end (MB) | growth (MB/h) |
|---|---|---|---|
{process_rows}

**Consumer lag** of the worker's group (summed over its partitions, committed offsets against end
offsets): highest {lag_note}.

**Candle close -> client** (the 1-minute candle's Kafka timestamp -> the subscriber's receipt of its
prediction, through the worker, the predictions topic, the server and the edge): p99 {first:,.1f} ms over
the candles closed in the first {window}, {last:,.1f} ms in the last {window}; over the whole run p50
{overall["p50"]:,.1f} ms, p99 {overall["p99"]:,.1f} ms, max {overall["max"]:,.1f} ms ({overall["n"]:,} deliveries).
Over the run, window by window (a window holds the candles that closed in it, and the samples taken in it):

| minutes | deliveries | p50 (ms) | p99 (ms) | max (ms) | highest lag (records) | stream worker RSS at the end (MB) |
|---|---|---|---|---|---|---|
{trend_rows}

**Delivery**: {len(result["expected"])} 1-minute candles closed during the run (from the trades sent;
{result["candles_seen"]} of them seen on the candles topic); each of the {SUBSCRIBERS} subscribers must
receive each one's prediction exactly once: lost {result["lost"]}, duplicated {result["duplicated"]}.
"""
    if quick:
        body += (
            "\n--quick: a 3-minute run, a 1-minute warm-up, and p99 compared over the first and last minute "
            "(one close per pair in each) instead of five.\n"
        )
    command = "python bench/soak.py" + (" --quick" if quick else "")
    publish("Soak: 30 minutes at 2,000 trades/s, 200 subscribers", command, body, figures)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 minutes, a 1-minute warm-up")
    args = parser.parse_args()
    from cryptopredict.settings import get_settings

    settings = get_settings()
    run = uuid.uuid4().hex[:6]
    try:
        result = await soak(settings, QUICK if args.quick else FULL, run)
    finally:
        await remove_run(settings, f"bench-soak-{run}-", run_pairs(run))
    report(result, args.quick)


if __name__ == "__main__":
    asyncio.run(main())
