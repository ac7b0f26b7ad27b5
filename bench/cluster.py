"""The cluster profile under load: what three replicated brokers cost, and what losing one costs.

Both targets speak SASL_SSL with SCRAM-SHA-512 and every write is acks=all:

- cluster: the cluster profile's 3 KRaft nodes, topics replicated 3 with min.insync.replicas 2;
- single: one node of the same build and security (its own data under `.local/bench-single/`), topics
  replicated once.

Throughput: one stream worker per run (candles at every interval, indicators, predictions, store sinks);
a busy market of 3 pairs (600 trades per minute each) published as fast as the broker takes it.
trades/s = trades / (first trade produced -> last candle emitted, Kafka timestamps), as in
bench/streaming.py; the median of 3 runs per target (1 with --quick), runs alternating.

Failover: the same market paced at 1,800 trades/s (a 1-minute candle per pair every wall-clock second);
15 s in, the broker leading the partition of the first pair's trades is killed -9, and started again
30 s later. failover_gap_s = the longest pause between consecutive candle closes (Kafka timestamps of
the 1-minute candles of all pairs) from the kill on. lost = windows of the trades that never reached
the store; duplicated = windows emitted with two different values (identical repeats, which an
at-least-once producer may write after a failover, are counted apart as `repeated`).

Usage: .venv/bin/python bench/cluster.py [--quick]   (needs `cryptopredict stack up`; starts the cluster)
Ends with one JSON line: {"cluster_trades_per_s", "single_trades_per_s", "failover_gap_s", "lost",
"duplicated"} and a few more figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from bench.report import publish  # noqa: E402
from bench.streaming import BUSY, Phase, expected_candles, market, publish_trades, run_phase, start_worker  # noqa: E402
from cryptopredict import stack  # noqa: E402
from cryptopredict.kafka_admin import admin_client, ensure_topics, partition_numbers  # noqa: E402
from cryptopredict.kafka_client import client_kwargs  # noqa: E402
from cryptopredict.models import Candle  # noqa: E402
from cryptopredict.settings import KafkaSettings, Settings  # noqa: E402
from cryptopredict.stack.base import StackPaths, live_pid  # noqa: E402
from cryptopredict.stack.kafka_cluster import KafkaNode  # noqa: E402
from cryptopredict.stack.profile import load_profile_settings, read_secrets  # noqa: E402
from cryptopredict.store.candles import async_engine  # noqa: E402
from cryptopredict.store.schema import candles  # noqa: E402
from cryptopredict.topics import CANDLES, TRADES, topic_name  # noqa: E402

SINGLE_PORT = 19392
FAILOVER_RATE = 1800.0  # trades/s: 3 pairs x 600 trades per minute, one event-minute per second
KILL_AFTER_S = 15.0
OUTAGE_S = 30.0


def single_broker(cluster: Settings) -> tuple[Settings, dict[str, str]]:
    """One SASL_SSL node with its own state and secrets, beside the cluster; its settings and the
    environment a worker needs for it."""
    local_dir = (cluster.local_dir / "bench-single").resolve()
    # The node runs the jars the launcher already resolved for the local broker.
    libs = local_dir / "kafka" / "libs"
    if not libs.exists():
        libs.parent.mkdir(parents=True, exist_ok=True)
        libs.symlink_to((cluster.local_dir / "kafka" / "libs").resolve())
    secrets = read_secrets(local_dir)
    env = {
        "CRYPTOPREDICT_LOCAL_DIR": str(local_dir),
        "CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{SINGLE_PORT}",
        "CRYPTOPREDICT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "CRYPTOPREDICT_KAFKA__SASL_USERNAME": cluster.kafka.sasl_username or "cryptopredict",
        "CRYPTOPREDICT_KAFKA__SASL_PASSWORD": secrets["CRYPTOPREDICT_KAFKA__SASL_PASSWORD"],
        "CRYPTOPREDICT_KAFKA__SSL_CA_FILE": secrets["CRYPTOPREDICT_KAFKA__SSL_CA_FILE"],
        "CRYPTOPREDICT_KAFKA__REPLICATION_FACTOR": "1",
        "CRYPTOPREDICT_KAFKA__MIN_INSYNC_REPLICAS": "1",
    }
    kafka = KafkaSettings(
        bootstrap_servers=env["CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVERS"],
        security_protocol="SASL_SSL",
        sasl_username=env["CRYPTOPREDICT_KAFKA__SASL_USERNAME"],
        sasl_password=SecretStr(env["CRYPTOPREDICT_KAFKA__SASL_PASSWORD"]),
        ssl_ca_file=Path(env["CRYPTOPREDICT_KAFKA__SSL_CA_FILE"]),
    )
    return cluster.model_copy(update={"local_dir": local_dir, "kafka": kafka}), env


def worker_env(base: dict[str, str]) -> dict[str, str]:
    return base | {"CRYPTOPREDICT_METRICS__STREAM_PORT": "-1", "CRYPTOPREDICT_KRAKEN__PAIRS": "[]"}


async def throughput(settings: Settings, env: dict[str, str], name: str, minutes: int, seed: int) -> float:
    run = uuid.uuid4().hex[:4].upper()
    pairs = [f"{name[0].upper()}{i}{run}/USD" for i in "ABC"]
    prefix = f"bench-cluster-{name}-{run.lower()}-"
    await ensure_topics(settings.kafka.model_copy(update={"topic_prefix": prefix}))
    worker = start_worker(prefix, settings.local_dir.resolve() / "logs" / f"bench-cluster-{name}.log", env)
    try:
        await asyncio.sleep(15)  # the worker joins its group
        phase = Phase(f"{name}, full speed", pairs, market(pairs, BUSY, minutes, seed=seed), None)
        await run_phase(settings, prefix, phase)
    finally:
        worker.terminate()
        worker.wait(60)
    return phase.trades_per_s


async def leader_of_pair(kafka: KafkaSettings, topic: str, pair: str) -> int:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = await partition_numbers(kafka, topic)
    partition = DefaultPartitioner()(pair.encode(), partitions, partitions)
    async with admin_client(kafka) as admin:
        (description,) = await admin.describe_topics([topic])
    return int(next(p["leader"] for p in description["partitions"] if p["partition"] == partition))


async def failover(settings: Settings, env: dict[str, str], minutes: int) -> dict[str, float | int]:
    run = uuid.uuid4().hex[:4].upper()
    pairs = [f"F{i}{run}/USD" for i in "ABC"]
    prefix = f"bench-cluster-failover-{run.lower()}-"
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(kafka)
    trades = market(pairs, BUSY, minutes, seed=41)
    phase = Phase("failover", pairs, trades, FAILOVER_RATE)
    worker = start_worker(prefix, settings.local_dir.resolve() / "logs" / "bench-cluster-failover.log", env)
    paths = StackPaths.from_settings(settings)
    try:
        await asyncio.sleep(15)
        leader = await leader_of_pair(kafka, topic_name(TRADES, prefix), pairs[0])
        publishing = asyncio.create_task(publish_trades(kafka, topic_name(TRADES, prefix), phase))
        await asyncio.sleep(KILL_AFTER_S)
        pid = live_pid(KafkaNode(settings, paths, leader))
        assert pid is not None, f"kafka-{leader} is not running"
        os.kill(pid, signal.SIGKILL)
        killed_ms = time.time() * 1000
        print(f"failover: killed kafka-{leader} (pid {pid}) {KILL_AFTER_S:.0f} s in", file=sys.stderr)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(stack.up, settings, [f"kafka-{leader}"])
        print(f"failover: kafka-{leader} back after {OUTAGE_S:.0f} s", file=sys.stderr)
        await publishing
        wanted = expected_candles(trades, pairs, settings)
        emitted = await candle_versions(kafka, topic_name(CANDLES, prefix), wanted, timeout_s=600)
        stored = await stored_windows(settings, pairs, wanted, timeout_s=300)
    finally:
        worker.terminate()
        worker.wait(60)
    closes = sorted(
        ts for (_, interval_s, _), versions in emitted.items() if interval_s == 60 for ts, _ in versions[:1]
    )
    after = [ts for ts in closes if ts >= killed_ms]
    gaps_after = [b - a for a, b in itertools.pairwise([killed_ms, *after])]
    before = [ts for ts in closes if ts < killed_ms]
    gaps_before = [b - a for a, b in itertools.pairwise(before)]
    return {
        "failover_gap_s": round(max(gaps_after, default=float("nan")) / 1000, 2),
        "gap_before_kill_s": round(max(gaps_before, default=float("nan")) / 1000, 2),
        "lost": len(wanted - stored),
        "duplicated": sum(len({v for _, v in versions}) > 1 for versions in emitted.values()),
        "repeated": sum(len(versions) - 1 for versions in emitted.values()),
        "candles": len(wanted),
    }


async def candle_versions(
    kafka: KafkaSettings, topic: str, wanted: set[tuple[str, int, datetime]], timeout_s: float
) -> dict[tuple[str, int, datetime], list[tuple[int, str]]]:
    """Every message of each window: (Kafka timestamp in ms, value), once all wanted windows are there."""
    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka), auto_offset_reset="earliest")
    await consumer.start()
    found: dict[tuple[str, int, datetime], list[tuple[int, str]]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    try:
        # Read on a few seconds past the last wanted window, so late repeats are counted too.
        while time.monotonic() < deadline and not (
            wanted <= found.keys() and time.monotonic() - idle_since > 5
        ):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    c = Candle.model_validate_json(r.value)
                    found[(c.pair, c.interval_s, c.window_start)].append((r.timestamp, c.model_dump_json()))
                    idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return found


async def stored_windows(
    settings: Settings, pairs: list[str], wanted: set[tuple[str, int, datetime]], timeout_s: float
) -> set[tuple[str, int, datetime]]:
    engine = async_engine(settings.postgres)
    query = select(candles.c.pair, candles.c.interval_s, candles.c.window_start).where(
        candles.c.pair.in_(pairs)
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with engine.connect() as conn:
                stored = {(r.pair, r.interval_s, r.window_start) for r in await conn.execute(query)}
            if wanted <= stored or time.monotonic() > deadline:
                return stored
            await asyncio.sleep(1)
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, minutes = (1, 10) if args.quick else (3, 30)

    cluster = load_profile_settings("cluster")
    await asyncio.to_thread(stack.up, cluster, ["kafka"])
    single, single_env = single_broker(cluster)
    await asyncio.to_thread(stack.up, single, ["kafka"])
    cluster_env = worker_env({"CRYPTOPREDICT_PROFILE": "cluster", **read_secrets(cluster.local_dir)})
    single_env = worker_env(single_env)

    rates: dict[str, list[float]] = {"cluster": [], "single": []}
    for n in range(runs):
        for name, settings, env in (("cluster", cluster, cluster_env), ("single", single, single_env)):
            rate = await throughput(settings, env, name, minutes, seed=50 + n)
            rates[name].append(rate)
            print(f"run {n + 1}: {name} {rate:,.0f} trades/s", file=sys.stderr)
    # Paced at one event-minute per second: the publishing outlasts the kill and the outage.
    fault = await failover(cluster, cluster_env, minutes=60 if args.quick else 90)
    await asyncio.to_thread(stack.down, single, ["kafka"])

    cluster_rate, single_rate = (statistics.median(rates[k]) for k in ("cluster", "single"))
    runs_text = "; ".join(f"{k}: {', '.join(f'{r:,.0f}' for r in v)}" for k, v in rates.items())
    body = f"""
Both targets over SASL_SSL (SCRAM-SHA-512), acks=all, one stream worker (every agent, store sinks on
the local PostgreSQL). Cluster: 3 KRaft nodes on this machine, topics replicated 3, min.insync.replicas 2.
Single: one node of the same build, replicated once. A busy market of 3 pairs ({minutes} event-minutes,
600 trades per minute each) as fast as the broker takes it; trades/s from first trade produced to last
candle emitted; median of {runs} run(s) per target (runs: {runs_text}). All three nodes share the 2 cores
with the worker, PostgreSQL and the rest of the stack, so the ratio is a floor for separate hosts.

| target | trades/s (median) |
|---|---|
| 3-node cluster, RF 3, min ISR 2 | {cluster_rate:,.0f} |
| single node, RF 1 | {single_rate:,.0f} |
| ratio cluster / single | {cluster_rate / single_rate:.2f} |

Failover: the market paced at {FAILOVER_RATE:,.0f} trades/s; {KILL_AFTER_S:.0f} s in, kill -9 of the broker
leading the first pair's trades partition, started again {OUTAGE_S:.0f} s later.

| figure | value |
|---|---|
| longest pause in 1-minute candle closes after the kill (s) | {fault["failover_gap_s"]} |
| longest pause before the kill (s) | {fault["gap_before_kill_s"]} |
| windows expected / lost / emitted with two values / identical repeats | {fault["candles"]} / {fault["lost"]} / {fault["duplicated"]} / {fault["repeated"]} |
"""
    command = "python bench/cluster.py" + (" --quick" if args.quick else "")
    publish(
        "Cluster: replicated brokers and failover",
        command,
        body,
        {
            "cluster_trades_per_s": round(cluster_rate),
            "single_trades_per_s": round(single_rate),
            "failover_gap_s": fault["failover_gap_s"],
            "lost": fault["lost"],
            "duplicated": fault["duplicated"],
            "repeated": fault["repeated"],
            "cluster_runs": [round(r) for r in rates["cluster"]],
            "single_runs": [round(r) for r in rates["single"]],
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
