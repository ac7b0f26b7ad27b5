"""Killing the Faust worker (kill -9) mid-stream and starting it again, restarting the broker, or handing
partitions from one worker to another gives exactly the candles and indicator rows of an uninterrupted
run: no window lost, none emitted twice with different values."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime

import pandas as pd
import pytest
from topic_prefixes import run_prefix

from cryptopredict import stack
from cryptopredict.features.candles import CandleState
from cryptopredict.features.indicators import indicator_frame
from cryptopredict.kafka_admin import ensure_topics, read_topic
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import Candle, IndicatorRow, trade_batches
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.topics import CANDLES, TECHNICAL_INDICATORS, TRADES, topic_name

pytestmark = pytest.mark.integration

PAIRS = ["KLA/USD", "KLB/USD"]
START = datetime(2026, 8, 1, tzinfo=UTC)


def start_worker(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "-l", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Run:
    """One isolated stream run: its own topic prefix, worker processes and a publisher of trades."""

    def __init__(self, settings, tmp_path, name: str, env: dict[str, str] | None = None) -> None:
        self.prefix = run_prefix(name)
        self.kafka = settings.kafka.model_copy(update={"topic_prefix": self.prefix})
        self.env = (
            os.environ
            | (env or {})
            | {
                "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": self.prefix,
                # The trades are old, so every window is long past its end on the wall clock: with the default
                # the idle timer would close the open window whenever the test pauses (a quiet market), which an
                # uninterrupted run computed from the trades alone does not do.
                "CRYPTOPREDICT_FEATURES__IDLE_CLOSE_S": "3600",
            }
        )
        self.log = (tmp_path / "faust.log").open("wb")
        self.workers: list[subprocess.Popen] = []
        self.publisher = ReliablePublisher(self.kafka)

    async def __aenter__(self) -> Run:
        await ensure_topics(self.kafka)
        await self.publisher.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.publisher.stop()
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)

    def start_worker(self) -> subprocess.Popen:
        self.workers.append(start_worker(self.env, self.log))
        return self.workers[-1]

    async def wait_until_working(self, timeout_s: float = 120) -> None:
        """Until a worker has joined and closed a first candle: starting one takes 10-20 s on a busy machine,
        and a broker stop or a kill before it joined would test nothing (or leave it with no partitions)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await read_topic(self.kafka, topic_name(CANDLES, self.prefix), idle_s=1):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"no candle within {timeout_s:.0f} s: the worker did not start working")
            await asyncio.sleep(1)

    async def publish(self, trades) -> None:
        # Stamped with our clock on the way in and batched per pair, as the feed does.
        now = datetime.now(UTC)
        fed = [trade.model_copy(update={"ingested_at": now}) for trade in trades]
        for batch in trade_batches(fed, max_size=50):
            await self.publisher.publish(
                topic_name(TRADES, self.prefix), batch.to_json_bytes(), key=batch.pair.encode()
            )
        await self.publisher.flush()


async def test_kill_9_and_restart_reproduces_an_uninterrupted_run(settings, tmp_path):
    trades = synthetic_market(PAIRS, START, minutes=60, seed=21)
    first, second = len(trades) * 2 // 5, len(trades) * 4 // 5
    async with Run(settings, tmp_path, "kill") as run:
        worker = run.start_worker()
        await run.publish(trades[:first])
        await run.wait_until_working()
        await run.publish(trades[first:second])  # a burst, and the kill lands while it is being processed
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        run.start_worker()
        await run.publish(trades[second:])
        await assert_same_as_uninterrupted(settings, run, trades, PAIRS, tmp_path)


async def test_broker_restart_mid_stream_reproduces_an_uninterrupted_run(settings, tmp_path):
    trades = synthetic_market(PAIRS, START, minutes=60, seed=23)
    first, second = len(trades) // 3, len(trades) * 2 // 3
    async with Run(settings, tmp_path, "broker") as run:
        run.start_worker()
        await run.publish(trades[:first])
        await run.wait_until_working()
        await run.publish(trades[first:second])
        await asyncio.to_thread(stack.down, settings, ["kafka"])  # a clean broker stop and start
        await asyncio.to_thread(stack.up, settings, ["kafka"])
        await run.publish(trades[second:])  # the publisher resends what the broker refused meanwhile
        await assert_same_as_uninterrupted(settings, run, trades, PAIRS, tmp_path)


async def test_two_workers_split_the_pairs_and_hand_over_without_loss(settings, tmp_path):
    pairs = ["TWA/USD", "TWB/USD", "TWC/USD", "TWD/USD"]
    trades = synthetic_market(pairs, START, minutes=40, seed=22)
    half = len(trades) // 2
    async with Run(settings, tmp_path, "two") as run:
        one, _two = run.start_worker(), run.start_worker()
        await asyncio.sleep(12)  # both join one group and split the partitions
        await run.publish(trades[:half])
        await asyncio.sleep(3)
        os.killpg(one.pid, signal.SIGTERM)  # a clean stop: its partitions move to the other worker
        one.wait(30)
        await run.publish(trades[half:])
        await assert_same_as_uninterrupted(settings, run, trades, pairs, tmp_path)


async def assert_same_as_uninterrupted(
    settings, run: Run, trades, pairs, tmp_path, timeout_s: float = 120
) -> None:
    kafka, prefix = run.kafka, run.prefix
    expected: dict[int, list[Candle]] = {}
    for interval_s in (60, 300):
        for pair in pairs:
            state = CandleState(pair=pair, interval_s=interval_s, grace_s=settings.features.grace_s)
            expected.setdefault(interval_s, []).extend(
                c for t in trades if t.pair == pair for c in state.add_trade(t)[0]
            )
    wanted = {(c.pair, c.interval_s, c.window_start) for cs in expected.values() for c in cs}
    emitted = await wait_for(kafka, topic_name(CANDLES, prefix), Candle, wanted, tmp_path, timeout_s)

    # Every window once in substance: repeats after the restart carry identical values.
    for key, versions in emitted.items():
        assert len({v.model_dump_json() for v in versions}) == 1, key
    for interval_s, candles in expected.items():
        for candle in candles:
            (got, *_) = emitted[(candle.pair, interval_s, candle.window_start)]
            assert got == candle, f"got {got!r}, an uninterrupted run gives {candle!r}"

    # An indicator row for every candle, also the ones closed last, and one value per window.
    indicators = topic_name(TECHNICAL_INDICATORS, prefix)
    rows = await wait_for(kafka, indicators, IndicatorRow, wanted, tmp_path, timeout_s)
    by_key = {key: {row.model_dump_json() for row in versions} for key, versions in rows.items()}
    assert all(len(v) == 1 for v in by_key.values()), [k for k, v in by_key.items() if len(v) > 1]
    for pair in pairs:
        candles = sorted((c for c in expected[60] if c.pair == pair), key=lambda c: c.window_start)
        frame = indicator_frame(candles)
        for start, want in frame.iterrows():
            (got_json,) = by_key[(pair, 60, start.to_pydatetime())]
            got = IndicatorRow.model_validate_json(got_json)
            for name, value in got.values.items():
                assert (value is None) == pd.isna(want[name]) and (value is None or value == want[name])


async def wait_for(kafka, topic: str, model, wanted: set[tuple], tmp_path, timeout_s: float = 120):
    """Records of `topic` by (pair, interval_s, window_start), once every `wanted` key is there."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        emitted: dict[tuple, list] = defaultdict(list)
        for value in await read_topic(kafka, topic, idle_s=2):
            record = model.model_validate_json(value)
            emitted[(record.pair, record.interval_s, record.window_start)].append(record)
        if wanted <= emitted.keys():
            return emitted
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(wanted - emitted.keys())[:5]
            log = (tmp_path / "faust.log").read_text()[-3000:]
            pytest.fail(f"{topic}: missing windows {missing}; log: {log}")
        await asyncio.sleep(2)
