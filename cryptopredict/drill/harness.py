"""The stream drill's harness: an isolated run of stream workers fed with trades, and the checks that
what it made is what an uninterrupted run makes (in the topics and in the store), each raising a
`DrillFailure` with what is missing or different."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict.drill.expected import expected_candles, expected_keys
from cryptopredict.features.indicators import indicator_frame
from cryptopredict.kafka_admin import ensure_topics, read_topic
from cryptopredict.models import Candle, IndicatorRow, Trade, trade_batches
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings
from cryptopredict.store.schema import candles, predictions, technical_indicators
from cryptopredict.topics import CANDLES, TECHNICAL_INDICATORS, TRADES, topic_name

# Everything a drill makes carries this namespace (`cryptopredict clean drill --yes` removes it).
NAMESPACE = "drill"


class DrillFailure(AssertionError):
    """A drill check found data lost, duplicated or different from an uninterrupted run."""


def start_worker(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "-l", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Run:
    """One isolated stream run: its own topic prefix, worker processes and a publisher of trades. Its
    workers log to `log_dir`/faust.log."""

    def __init__(
        self, settings: Settings, log_dir: Path, prefix: str, env: dict[str, str] | None = None
    ) -> None:
        self.prefix = prefix
        self.log_dir = log_dir
        self.kafka = settings.kafka.model_copy(update={"topic_prefix": self.prefix})
        self.env = (
            dict(os.environ)
            | (env or {})
            | {
                "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": self.prefix,
                # The trades are old, so every window is long past its end on the wall clock: with the default
                # the idle timer would close the open window whenever the run pauses (a quiet market), which an
                # uninterrupted run computed from the trades alone does not do.
                "CRYPTOPREDICT_FEATURES__IDLE_CLOSE_S": "3600",
            }
        )
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = (log_dir / "faust.log").open("wb")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.publisher = ReliablePublisher(self.kafka)

    async def __aenter__(self) -> Run:
        await ensure_topics(self.kafka)
        await self.publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.publisher.stop()
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)
        self.log.close()

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.workers.append(start_worker(self.env, self.log))
        return self.workers[-1]

    def log_tail(self, chars: int = 3000) -> str:
        return (self.log_dir / "faust.log").read_text(errors="replace")[-chars:]

    async def wait_until_working(self, timeout_s: float = 120) -> None:
        """Until a worker has joined and closed a first candle: starting one takes 10-20 s on a busy machine,
        and a broker stop or a kill before it joined would test nothing (or leave it with no partitions)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await read_topic(self.kafka, topic_name(CANDLES, self.prefix), idle_s=1):
            if asyncio.get_running_loop().time() > deadline:
                raise DrillFailure(f"no candle within {timeout_s:.0f} s: the worker did not start working")
            await asyncio.sleep(1)

    async def publish(self, trades: Iterable[Trade]) -> None:
        # Stamped with our clock on the way in and batched per pair, as the feed does.
        now = datetime.now(UTC)
        fed = [trade.model_copy(update={"ingested_at": now}) for trade in trades]
        for batch in trade_batches(fed, max_size=50):
            await self.publisher.publish(
                topic_name(TRADES, self.prefix), batch.to_json_bytes(), key=batch.pair.encode()
            )
        await self.publisher.flush()


async def assert_same_as_uninterrupted(
    settings: Settings,
    run: Run,
    trades: Sequence[Trade],
    pairs: Sequence[str],
    timeout_s: float = 120,
) -> None:
    """The candle and indicator topics hold every window of an uninterrupted run, with its values; a window
    repeated after a restart carries identical values."""
    kafka, prefix = run.kafka, run.prefix
    expected = expected_candles(trades, pairs, (60, 300), settings.features.grace_s)
    wanted = {(c.pair, c.interval_s, c.window_start) for cs in expected.values() for c in cs}
    emitted = await wait_for(kafka, topic_name(CANDLES, prefix), Candle, wanted, run, timeout_s)

    for key, versions in emitted.items():
        if len({v.model_dump_json() for v in versions}) != 1:
            raise DrillFailure(f"window {key} emitted with different values: {versions!r}")
    for interval_s, closed in expected.items():
        for candle in closed:
            (got, *_) = emitted[(candle.pair, interval_s, candle.window_start)]
            if got != candle:
                raise DrillFailure(f"got {got!r}, an uninterrupted run gives {candle!r}")

    # An indicator row for every candle, also the ones closed last, and one value per window.
    indicators = topic_name(TECHNICAL_INDICATORS, prefix)
    rows = await wait_for(kafka, indicators, IndicatorRow, wanted, run, timeout_s)
    by_key = {key: {row.model_dump_json() for row in versions} for key, versions in rows.items()}
    differing = [k for k, v in by_key.items() if len(v) > 1]
    if differing:
        raise DrillFailure(f"indicator rows emitted with different values: {differing[:5]}")
    for pair in pairs:
        series = sorted((c for c in expected[60] if c.pair == pair), key=lambda c: c.window_start)
        frame = indicator_frame(series)
        for start, want in frame.iterrows():
            (got_json,) = by_key[(pair, 60, pd.Timestamp(start).to_pydatetime())]  # type: ignore[arg-type]
            got = IndicatorRow.model_validate_json(got_json)
            for name, value in got.values.items():
                same = (value is None) == pd.isna(want[name]) and (value is None or value == want[name])
                if not same:
                    raise DrillFailure(
                        f"{pair} {start} {name}: got {value}, an uninterrupted run gives {want[name]}"
                    )


async def wait_for(
    kafka: Any, topic: str, model: Any, wanted: set[tuple[Any, ...]], run: Run, timeout_s: float = 120
) -> dict[tuple[Any, ...], list[Any]]:
    """Records of `topic` by (pair, interval_s, window_start), once every `wanted` key is there."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        emitted: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
        for value in await read_topic(kafka, topic, idle_s=2):
            record = model.model_validate_json(value)
            emitted[(record.pair, record.interval_s, record.window_start)].append(record)
        if wanted <= emitted.keys():
            return emitted
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(wanted - emitted.keys())[:5]
            raise DrillFailure(f"{topic}: missing windows {missing}; log: {run.log_tail()}")
        await asyncio.sleep(2)


async def assert_store_holds_each_once(
    settings: Settings,
    engine: AsyncEngine,
    trades: Sequence[Trade],
    pairs: Sequence[str],
    timeout_s: float = 300,
) -> None:
    """Candles and indicator rows of every closed window, and a prediction per 1-minute candle, once."""
    expected = expected_keys(trades, pairs, (60, 300), settings.features.grace_s)
    deadline = time.monotonic() + timeout_s  # the stream guard may take its 120 s allowance, then restart
    while True:
        async with engine.connect() as conn:
            stored = {
                tuple(row)
                for row in await conn.execute(
                    select(candles.c.pair, candles.c.interval_s, candles.c.window_start).where(
                        candles.c.pair.in_(pairs)
                    )
                )
            }
            indicator_rows = {
                tuple(row)
                for row in await conn.execute(
                    select(
                        technical_indicators.c.pair,
                        technical_indicators.c.interval_s,
                        technical_indicators.c.window_start,
                    ).where(technical_indicators.c.pair.in_(pairs))
                )
            }
            forecasts = (
                await conn.execute(
                    select(predictions.c.pair, predictions.c.feature_time, func.count())
                    .where(predictions.c.pair.in_(pairs), predictions.c.interval_s == 60)
                    .group_by(predictions.c.pair, predictions.c.feature_time)
                )
            ).all()
        predicted = {(pair, feature_time) for pair, feature_time, _ in forecasts}
        minute_candles = {(pair, start) for pair, interval_s, start in expected if interval_s == 60}
        if stored == expected and indicator_rows == expected and minute_candles <= predicted:
            break
        if time.monotonic() > deadline:
            raise DrillFailure(
                f"store after the drill: {len(expected - stored)} candles missing, {len(stored - expected)} extra; "
                f"{len(expected - indicator_rows)} indicator rows missing; "
                f"{len(minute_candles - predicted)} of {len(minute_candles)} candles without a prediction"
            )
        await asyncio.sleep(2)
    if not all(count == 1 for _, _, count in forecasts):
        raise DrillFailure("a candle has two predictions")
    if predicted != minute_candles:
        raise DrillFailure(
            f"predictions of candles that an uninterrupted run does not close: {sorted(predicted - minute_candles)[:5]}"
        )


def start_training_worker(
    task_queue: str, log: IO[bytes], env: Mapping[str, str] | None = None, local_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """A training worker in a child process (its own process group) serving only `task_queue`, with no
    schedules and no metrics port; `local_dir` gives it a disk of its own, as on another host."""
    worker_env = dict(os.environ if env is None else env) | {"CRYPTOPREDICT_METRICS__WORKER_PORT": "-1"}
    if local_dir is not None:
        worker_env["CRYPTOPREDICT_LOCAL_DIR"] = str(local_dir)
    command = [sys.executable, "-m", "cryptopredict.cli", "worker", "--queues", "training", "--no-schedules"]
    return subprocess.Popen(
        [*command, "--task-queue", task_queue],
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
