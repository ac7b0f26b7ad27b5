"""`cryptopredict drill`: the whole pipeline live on the stack it is given, one fault at a time, each
compared with the uninterrupted run of its seeded replay.

Per fault: a fresh pipeline (own topic prefix, own pairs, see pipeline.py) replays its trades; a third of
the way through, the fault starts and lasts `outage_s`; afterwards the runner measures how long the
pipeline takes to catch up (every window closed by the trades replayed up to the fault's end is in the
store with its prediction), lets the replay finish, and checks the topics, the store, the outcome ledger,
the subscribers and any workflow against the expected results.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from cryptopredict.drill.checks import Findings, store_findings, topic_findings
from cryptopredict.drill.expected import expected_keys
from cryptopredict.drill.harness import DrillFailure, assert_same_as_uninterrupted
from cryptopredict.drill.pipeline import HORIZON_CANDLES, INTERVALS_S, Pipeline, drill_pairs, replay_for
from cryptopredict.drill.workflows import NewsBurst, Retrain
from cryptopredict.settings import Settings

Progress = Callable[[str], None]


@dataclass
class FaultContext:
    settings: Settings
    pipeline: Pipeline
    outage_s: float
    retrain: Retrain | None = None
    news: NewsBurst | None = None
    notes: list[str] = field(default_factory=list)  # what the fault itself observed, for the table


@dataclass(frozen=True)
class Fault:
    name: str
    what: str  # the fault, as the table names it
    inject: Callable[[FaultContext], Awaitable[None]]  # starts the fault, waits outage_s, ends it
    outage_s: float = 30.0  # the fault's own length, unless the run gives one for all
    subscribers: int = 5
    pairs: int = 2
    stops_stack: bool = True  # stops a stack component: what was healthy is checked afterwards
    retrain: bool = False  # a retrain through Temporal runs meanwhile
    news: bool = False  # a news burst through Temporal runs meanwhile


@dataclass
class FaultResult:
    fault: str
    what: str
    outage_s: float
    user_sees: str = ""
    recover_s: float | None = None
    lost: str = "0"
    duplicated: str = "0"
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


# --- faults -----------------------------------------------------------------------------------------
async def stack_command(action: str, name: str) -> None:
    """`cryptopredict stack <action> --only <name>` in a process of its own: the launcher forks to start
    a component, and a fork of this process, whose gRPC clients run threads, can crash in gRPC's fork
    handlers before it starts anything."""
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptopredict.cli", "stack", action, "--only", name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    if process.returncode != 0:
        raise DrillFailure(f"stack {action} {name} failed: {err.decode(errors='replace')[-500:]}")


HEALTHY_SCRIPT = (
    "import json; from cryptopredict import stack; from cryptopredict.settings import get_settings; "
    "print(json.dumps([s.name for s in stack.status(get_settings()) if s.healthy]))"
)


async def healthy_components() -> set[str]:
    """The stack's healthy components (asked in a process of its own, as `stack_command`)."""
    import json
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HEALTHY_SCRIPT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return set(json.loads(out.decode().strip().splitlines()[-1])) if process.returncode == 0 else set()


async def restore_stack(healthy_before: set[str], progress: Progress) -> None:
    """Starts again whatever was healthy before the fault and is not now (a component that depends on the
    stopped one may have exited meanwhile, as MLflow does without its database)."""
    missing = healthy_before - await healthy_components()
    for name in sorted(missing):
        progress(f"{name} was healthy before the fault: starting it again")
        await stack_up(name)


async def _stop_component(ctx: FaultContext, name: str) -> None:
    await stack_command("down", name)
    try:
        await asyncio.sleep(ctx.outage_s)
    finally:
        await stack_up(name)


async def stack_up(name: str, attempts: int = 3) -> None:
    """A drill leaves the stack as it found it: a start that failed is tried again."""
    for attempt in range(1, attempts + 1):
        try:
            await stack_command("up", name)
            return
        except DrillFailure:
            if attempt == attempts:
                raise
            await asyncio.sleep(2)


async def postgres_down(ctx: FaultContext) -> None:
    await _stop_component(ctx, "postgres")


async def kafka_down(ctx: FaultContext) -> None:
    await _stop_component(ctx, "kafka")


async def stream_worker_killed(ctx: FaultContext) -> None:
    import os
    import signal

    run = ctx.pipeline.run
    worker = run.workers[-1]
    os.killpg(worker.pid, signal.SIGKILL)  # the supervisor and the worker: as a node dying
    await asyncio.to_thread(worker.wait)
    await asyncio.sleep(ctx.outage_s)
    run.start_worker()  # as the process manager starts it again


async def mlflow_down_mid_retrain(ctx: FaultContext) -> None:
    assert ctx.retrain is not None
    await ctx.retrain.start_workflow()
    running = await ctx.retrain.wait_for_activity(
        ("build_training_dataset", "screen_candidates", "tune_trials")
    )
    ctx.notes.append(f"stopped during {running}")
    await _stop_component(ctx, "mlflow")


async def temporal_down_mid_retrain(ctx: FaultContext) -> None:
    assert ctx.retrain is not None
    await ctx.retrain.start_workflow()
    running = await ctx.retrain.wait_for_activity(("tune_trials", "screen_candidates"))
    ctx.notes.append(f"stopped during {running}")
    await _stop_component(ctx, "temporal")


async def mlflow_down_during_reload(ctx: FaultContext) -> None:
    """A new champion version is promoted, and MLflow stops before the prediction agent has loaded it;
    the model event that tells the agent is published while MLflow is away."""
    pipeline = ctx.pipeline
    events = await asyncio.to_thread(pipeline.promote_new_champions)
    await stack_command("down", "mlflow")
    try:
        await pipeline.publish_model_events(events)
        await asyncio.sleep(ctx.outage_s)
    finally:
        await stack_up("mlflow")


async def grpc_server_restarted(ctx: FaultContext) -> None:
    await ctx.pipeline.stop_process("grpc")
    await asyncio.sleep(ctx.outage_s)
    await ctx.pipeline.start_grpc()


async def llm_down_during_news(ctx: FaultContext) -> None:
    assert ctx.news is not None
    await ctx.news.start_ingest()
    await _stop_component(ctx, "llm")


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("postgres", "PostgreSQL stopped", postgres_down),
        Fault(
            "stream-worker", "stream worker killed -9 while predicting", stream_worker_killed, stops_stack=False
        ),
        Fault("kafka", "Kafka broker stopped", kafka_down),
        Fault("mlflow-retrain", "MLflow stopped during a retrain", mlflow_down_mid_retrain, retrain=True),
        Fault("mlflow-reload", "MLflow stopped during a model reload", mlflow_down_during_reload),
        Fault(
            "temporal", "Temporal server stopped mid-retrain (database kept)", temporal_down_mid_retrain,
            retrain=True,
        ),
        Fault(
            "grpc", "gRPC server restarted under 1,000 subscribers", grpc_server_restarted,
            outage_s=5.0, subscribers=1000, stops_stack=False,
        ),
        Fault("llm", "LLM server down during a news burst", llm_down_during_news, outage_s=60.0, news=True),
    )
}  # fmt: skip
CI_FAULTS = ("postgres", "stream-worker")
CI_OUTAGE_S = 10.0


# --- one fault ------------------------------------------------------------------------------------
class UserView:
    """What a user of the stream sees while the fault lasts: the longest pause between predictions at a
    subscriber, and the errors of a client asking GetLatestPrediction through the edge once a second."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.errors: dict[str, int] = {}
        self.calls = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _probe(self) -> None:
        from grpc_server.client import get_latest_prediction

        target = f"127.0.0.1:{self.pipeline.edge_port}"
        while True:
            self.calls += 1
            try:
                await get_latest_prediction(target, self.pipeline.pairs[0], INTERVALS_S[0], timeout=2)
            except grpc.aio.AioRpcError as exc:
                self.errors[exc.code().name] = self.errors.get(exc.code().name, 0) + 1
            await asyncio.sleep(1.0)

    def longest_pause_s(self, since: float, until: float) -> float:
        """Longest wall gap between predictions arriving at the first subscriber within [since, until]."""
        arrivals = sorted(a for a in self.pipeline.arrivals if since <= a <= until)
        points = [since, *arrivals, until]
        return max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0

    def describe(self, since: float, until: float) -> str:
        subscribers = self.pipeline.subscribers
        unavailable = sum(1 for s in subscribers if s.unavailable)
        parts = [
            f"longest pause between predictions {self.longest_pause_s(since, until):.0f} s",
            f"{unavailable}/{len(subscribers)} streams UNAVAILABLE" if unavailable else "streams stay open",
        ]
        if self.errors:
            parts.append(
                "GetLatestPrediction: "
                + ", ".join(f"{n} {code}" for code, n in sorted(self.errors.items()))
                + f" of {self.calls}"
            )
        return "; ".join(parts)


async def caught_up_after(pipeline: Pipeline, engine: Any, until: datetime, timeout_s: float) -> float:
    """Seconds until the store holds every window closed by the trades up to `until` (replay clock), and the
    prediction of each pair's newest such 1-minute candle is in the store and at every subscriber: the
    pipeline has caught up with the replay.
    (Whatever it lost on the way never arrives; the checks afterwards count it.)"""
    from cryptopredict.drill.checks import stored_keys
    from cryptopredict.store.candles import store_unreachable

    started = time.monotonic()
    wanted = expected_keys(
        pipeline.trades_until(until), pipeline.pairs, INTERVALS_S, pipeline.settings.features.grace_s
    )
    newest: dict[str, datetime] = {}
    for p, i, s in wanted:
        if i == INTERVALS_S[0]:
            newest[p] = max(newest.get(p, s), s)
    minute = set(newest.items())
    while True:
        try:
            stored = await stored_keys(engine, pipeline.pairs)
        except Exception as exc:  # the store itself may still be coming back
            if not store_unreachable(exc):
                raise
        else:
            have = set(stored["candles"]) & set(stored["indicators"])
            predicted = {(p, s) for p, _, s, *_ in stored["predictions"]}
            if wanted <= have and minute <= predicted and subscribers_have(pipeline, newest):
                return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise DrillFailure(f"not caught up {timeout_s:.0f} s after the fault ended")
        await asyncio.sleep(0.5)


def subscribers_have(pipeline: Pipeline, newest: dict[str, datetime]) -> bool:
    """Every subscriber has received each pair's prediction of the candle starting at `newest[pair]`."""
    for subscriber in pipeline.subscribers:
        latest = {p.pair: p.feature_time for p in subscriber.latest().values()}
        if any(latest.get(pair, start) < start or pair not in latest for pair, start in newest.items()):
            return False
    return True


async def check_subscribers(pipeline: Pipeline, engine: Any, timeout_s: float = 30) -> list[str]:
    """Every subscriber received every prediction, or got UNAVAILABLE and, subscribed again, the latest
    prediction of each key."""
    from cryptopredict.drill.checks import stored_keys

    deadline = time.monotonic() + timeout_s
    while True:
        stored = await stored_keys(engine, pipeline.pairs)
        made = {(p, i, s, h) for p, i, s, h, _, _ in stored["predictions"] if i == INTERVALS_S[0]}
        latest: dict[tuple[str, int, int], datetime] = {}
        for p, i, s, h in made:
            latest[(p, i, h)] = max(latest.get((p, i, h), s), s)
        failures = []
        for n, subscriber in enumerate(pipeline.subscribers):
            got = {(p.pair, p.interval_s, p.feature_time, p.horizon_s) for p in subscriber.received}
            if subscriber.other_errors:
                failures.append(f"subscriber {n}: {subscriber.other_errors[0]}")
            elif not subscriber.unavailable:
                if not made <= got:
                    failures.append(
                        f"subscriber {n} (never UNAVAILABLE) missed {len(made - got)} of {len(made)} predictions"
                    )
            else:
                seen = {k: p.feature_time for k, p in subscriber.latest().items()}
                if any(seen.get(k) != v for k, v in latest.items()):
                    failures.append(
                        f"subscriber {n}: after UNAVAILABLE, not the latest prediction of each key"
                    )
        if not failures or time.monotonic() > deadline:
            if failures:
                return [f"{len(failures)} of {len(pipeline.subscribers)} subscribers: {failures[0]}"]
            return []
        await asyncio.sleep(1)


async def run_fault(
    settings: Settings, fault: Fault, outage_s: float, log_dir: Path, progress: Progress, seed: int = 41
) -> FaultResult:
    from cryptopredict.store.candles import async_engine
    from cryptopredict.store.migrate import migrate

    began = time.monotonic()
    result = FaultResult(fault.name, fault.what, outage_s)
    replay = replay_for(drill_pairs(fault.pairs), outage_s, seed)
    pipeline = Pipeline(settings, fault.name, replay, log_dir / fault.name)
    ctx = FaultContext(settings, pipeline, outage_s)
    await asyncio.to_thread(migrate, settings.postgres)
    engine = async_engine(settings.postgres)
    view = UserView(pipeline)
    # Asked while the pipeline starts; only a fault that stops a stack component needs it.
    healthy_before = asyncio.create_task(healthy_components()) if fault.stops_stack else None
    try:
        progress(
            f"{fault.name}: champions, stream worker, gRPC server, edge, {fault.subscribers} subscribers"
        )
        await asyncio.to_thread(pipeline.ensure_champions)
        if fault.retrain:
            ctx.retrain = Retrain(settings, pipeline.log_dir)
            await ctx.retrain.start()
        if fault.news:
            ctx.news = NewsBurst(settings, pipeline.prefix)
            await ctx.news.start()
        await pipeline.start(fault.subscribers)
        await pipeline.start_replay()
        await pipeline.wait_until_working()
        view.start()
        await pipeline.wait_replay_fraction(0.3, timeout_s=replay.wall_s + 60)
        progress(f"{fault.name}: fault for {outage_s:.0f} s")
        fault_start = time.monotonic()
        await fault.inject(ctx)
        fault_end = time.monotonic()
        replayed = pipeline.replay_now()
        assert replayed is not None
        progress(f"{fault.name}: fault over; waiting for the pipeline to catch up")
        try:
            result.recover_s = await caught_up_after(pipeline, engine, replayed, timeout_s=240)
            progress(f"{fault.name}: caught up after {result.recover_s:.1f} s; replay finishing")
        except DrillFailure as exc:
            result.failures.append(str(exc))
        result.user_sees = view.describe(fault_start, fault_end + (result.recover_s or 0.0))
        await view.stop()
        await asyncio.wait_for(pipeline.exchange.finished.wait(), replay.wall_s + 120)
        findings = await check_everything(settings, pipeline, engine)
        result.lost, result.duplicated = findings.summary("lost"), findings.summary("duplicated")
        result.failures += findings.failures
        seen = [result.user_sees, *ctx.notes]
        if ctx.retrain is not None:
            outcome, retries = await ctx.retrain.result()
            seen.append(f"retrain {outcome} after {retries} activity retries")
        if ctx.news is not None:
            news_failures, news_summary = await ctx.news.check()
            result.failures += news_failures
            seen.append(f"news: {news_summary}")
        result.user_sees = "; ".join(seen)
    except DrillFailure as exc:
        result.failures.append(str(exc))
    finally:
        await view.stop()
        if ctx.retrain is not None:
            ctx.retrain.stop()
        if ctx.news is not None:
            await ctx.news.stop()
        await engine.dispose()
        await pipeline.stop()
        if healthy_before is not None:
            await restore_stack(await healthy_before, progress)
    result.wall_s = time.monotonic() - began
    return result


async def check_everything(settings: Settings, pipeline: Pipeline, engine: Any) -> Findings:
    try:
        await assert_same_as_uninterrupted(
            settings, pipeline.run, pipeline.trades, pipeline.pairs, timeout_s=180
        )
        topic_failure = None
    except DrillFailure as exc:
        topic_failure = str(exc)
    horizon_s = HORIZON_CANDLES * INTERVALS_S[0]
    deadline = time.monotonic() + 60
    while True:  # the last windows' predictions and ledger rows are written moments after the topics
        findings = await store_findings(
            settings, engine, pipeline.trades, pipeline.pairs, INTERVALS_S, INTERVALS_S[0], horizon_s
        )
        if (findings.lost == 0 and findings.duplicated == 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    if topic_failure:
        findings.failures.append(topic_failure)
    for kind, keys in (await topic_findings(pipeline.run.kafka, pipeline.prefix)).items():
        if keys:
            findings.failures.append(
                f"{len(keys)} {kind} emitted with different values, e.g. {sorted(keys, key=repr)[0]}"
            )
            previous = findings.differences[kind]
            findings.differences[kind] = type(previous)(
                previous.lost, previous.duplicated | keys, previous.extra
            )
    for kind, difference in findings.differences.items():
        if difference.lost:
            findings.failures.append(
                f"{len(difference.lost)} {kind} lost, e.g. {sorted(difference.lost, key=repr)[0]}"
            )
        if difference.duplicated:
            findings.failures.append(f"{len(difference.duplicated)} {kind} duplicated")
        if difference.extra:
            findings.failures.append(f"{len(difference.extra)} {kind} an uninterrupted run does not make")
    findings.failures += await check_subscribers(pipeline, engine)
    return findings


# --- all faults -------------------------------------------------------------------------------------
async def run_drill(
    settings: Settings, names: Sequence[str], outage_s: float | None, log_dir: Path, progress: Progress
) -> list[FaultResult]:
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}: faults are {list(FAULTS)}")
    results = []
    for n, name in enumerate(names):
        fault = FAULTS[name]
        length = fault.outage_s if outage_s is None else outage_s
        results.append(await run_fault(settings, fault, length, log_dir, progress, seed=41 + n))
    return results


def table_rows(results: Sequence[FaultResult]) -> list[tuple[str, ...]]:
    return [
        (
            f"{r.fault} ({r.what}, {r.outage_s:.0f} s)",
            r.user_sees or "-",
            "-" if r.recover_s is None else f"{r.recover_s:.1f} s",
            r.lost,
            r.duplicated,
            "ok" if r.passed else "FAILED: " + "; ".join(r.failures),
        )
        for r in results
    ]


HEADER = ("fault", "what a user sees meanwhile", "time to recover", "lost", "duplicated", "checks")


def markdown_table(results: Sequence[FaultResult]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(results)]
    return "\n".join(lines)
