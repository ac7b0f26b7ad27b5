"""Captures one real history per workflow type (both targets of TrainingWorkflow) into this folder, for
tests/unit/test_workflow_replay.py: small runs on the real local stack (`cryptopredict stack up`), with the
project's own worker builders and settings, each on task queues of its own.

    .venv/bin/python tests/histories/capture.py            # every history not captured yet
    .venv/bin/python tests/histories/capture.py backfill   # one group: training, retrain, drift, ...

A history already here is never written again: the committed ones are what running workflows of the
released code look like, and re-recording one to make a later change pass would hide exactly the
nondeterminism the replay test is there to catch. A new workflow type, or a new branch worth keeping,
gets a file of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from websockets.asyncio.client import connect

from cryptopredict import workflow_types
from cryptopredict.kafka_admin import delete_topics, topic_names
from cryptopredict.kraken.protocol import subscribe_request
from cryptopredict.kraken.sources import PairSpec, synthetic_market
from cryptopredict.models import DeadLetter, Prediction
from cryptopredict.models.backfill import BackfillInput, BackfillProgress
from cryptopredict.models.drift import DriftMonitorInput, DriftReport
from cryptopredict.models.news_flow import NewsIngestInput, NewsIngestResult
from cryptopredict.models.retention import RetentionInput, RetentionReport, RetentionScope
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import Settings, get_settings
from cryptopredict.simulators.exchange import ReplayExchange
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.simulators.news import NewsServer, sample_news_items
from cryptopredict.store.candles import async_engine, insert_dead_letters, upsert_candles, upsert_predictions
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import sentiment_workflow_id, training_workflow_id
from workflows.worker import build_news_workers, build_worker

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = timedelta(minutes=15)


def path_of(name: str) -> Path:
    return HERE / f"{name}.json"


async def save(handle: WorkflowHandle, name: str) -> None:
    if path_of(name).exists():
        print(f"{name}: already captured, not re-recorded")
        return
    history = await handle.fetch_history()
    path_of(name).write_text(history.to_json() + "\n")
    print(f"{path_of(name).relative_to(HERE.parents[1])}: {len(history.events)} events", flush=True)


def unique_pair(letter: str) -> str:
    return f"{letter}{uuid.uuid4().hex[:5].upper()}/USD"


async def seed(settings: Settings, candles: list) -> None:
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    try:
        await upsert_candles(engine, candles)
    finally:
        await engine.dispose()


def quick(pair: str, **extra: object) -> TrainingInput:
    """The integration tests' small budgets (tests/integration/test_training_workflow.py), fewer trials."""
    values: dict[str, object] = dict(
        pair=pair,
        interval_s=60,
        lags=5,
        folds=2,
        trials=2,
        tuning_batches=2,
        screen_time_limit_s=5.0,
        screen_max_rows=2000,
        reason="history capture",
    )
    return TrainingInput.model_validate(values | extra)


@contextlib.asynccontextmanager
async def training_worker(client: Client, settings: Settings) -> AsyncIterator[str]:
    """The training queue's worker (training, retrain, drift, backfill) on a queue of its own."""
    task_queue = f"capture-training-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            yield task_queue


# (target, horizon, name of the history's variant)
TRAINING_VARIANTS = [
    ("price", 1, "price"),
    ("volatility", 5, "volatility"),
    ("price", 1, "price-dataset-input"),
    ("volatility", 5, "volatility-dataset-input"),
]


async def capture_training(client: Client, settings: Settings) -> None:
    """TrainingWorkflow, price and volatility target, on 3,000 synthetic candles (as the integration
    tests: enough rows for the interval's volatility scale before two folds). `-price` and `-volatility`
    were captured before the dataset step took one input model; the `-dataset-input` ones after."""
    async with training_worker(client, settings) as task_queue:
        for target, horizon, variant in TRAINING_VARIANTS:
            name = f"TrainingWorkflow-{variant}"
            if path_of(name).exists():
                continue
            pair = unique_pair("H")
            await seed(settings, synthetic_candles(pair, 60, 3_000, T0, seed=3, gap_every=97))
            request = quick(pair, target=target, horizon_candles=horizon)
            handle = await client.start_workflow(
                workflow_types.TRAINING,
                request,
                id=training_workflow_id(pair, 60, horizon, target=target),
                task_queue=task_queue,
                execution_timeout=TIMEOUT,
                result_type=TrainingResult,
            )
            result = await handle.result()
            print(f"{name}: promoted={result.promoted} tuned={[t.family for t in result.tuned]}")
            await save(handle, name)


async def capture_retrain(client: Client, settings: Settings) -> None:
    """ScheduledRetrainWorkflow of a pair without candles: it starts the target's TrainingWorkflow, which
    fails at its first step with NotEnoughData (not retried): both histories are kept."""
    async with training_worker(client, settings) as task_queue:
        pair = unique_pair("E")
        handle = await client.start_workflow(
            workflow_types.SCHEDULED_RETRAIN,
            quick(pair, reason="schedule"),
            id=f"capture-retrain-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            execution_timeout=TIMEOUT,
            result_type=str,
        )
        print("ScheduledRetrainWorkflow:", await handle.result())
        training = client.get_workflow_handle(training_workflow_id(pair, 60, 1))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(training.result(), TIMEOUT.total_seconds())
        await save(handle, "ScheduledRetrainWorkflow")
        await save(training, "TrainingWorkflow-not-enough-data")


async def capture_drift(client: Client, settings: Settings) -> None:
    """DriftMonitorWorkflow on a pair whose volatility jumps fivefold in the recent window: a breach
    starts the retrain (on a queue no worker polls: it is terminated unrun); the same check with
    `retrain: false` only reports."""
    pair = unique_pair("D")
    calm = synthetic_candles(pair, 60, 600, T0, seed=11, gap_every=97)
    shifted = synthetic_candles(
        pair, 60, 400, T0 + timedelta(minutes=600), seed=12, volatility=0.01, gap_every=97
    )
    await seed(settings, calm + shifted)
    idle_queue = f"capture-idle-{uuid.uuid4().hex[:8]}"
    request = DriftMonitorInput(
        pair=pair,
        interval_s=60,
        recent_window_s=400 * 60,
        min_rows=100,
        retrain_cooldown_s=0,
        training_task_queue=idle_queue,
    )
    async with training_worker(client, settings) as task_queue:
        for name, retrain in (
            ("DriftMonitorWorkflow-breach", True),
            ("DriftMonitorWorkflow-report-only", False),
        ):
            if path_of(name).exists():
                continue
            handle = await client.start_workflow(
                workflow_types.DRIFT_MONITOR,
                request.model_copy(update={"retrain": retrain}),
                id=f"capture-drift-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                execution_timeout=TIMEOUT,
                result_type=DriftReport,
            )
            report = await handle.result()
            print(f"{name}: {report.summary()}")
            if retrain and (report.retrain is None or report.retrain.action != "started"):
                sys.exit(f"{name}: expected a breach that starts a retrain, got {report.summary()}")
            if report.retrain is not None:
                await client.get_workflow_handle(report.retrain.workflow_id).terminate("history capture")
            await save(handle, name)


BACKFILL_NAMES = ["BackfillWorkflow", "BackfillWorkflow-trade-pages-input"]


async def capture_backfill(client: Client, settings: Settings) -> None:
    """BackfillWorkflow of 30 minutes of a synthetic book from the replay exchange, one page per call.
    `BackfillWorkflow` was captured before the pages activity took one input model, the other after."""
    pair = f"B{uuid.uuid4().hex[:6].upper()}/USD"
    trades = synthetic_market([PairSpec(pair, trades_per_minute=60)], T0, minutes=30, seed=3)
    exchange = ReplayExchange(trades, speed="max")
    await exchange.start()
    try:
        async with connect(exchange.url) as ws:  # REST serves what has happened on the replay clock
            await ws.send(subscribe_request([pair]))
            await asyncio.wait_for(exchange.finished.wait(), 60)
        request = BackfillInput(
            pair=pair,
            start=T0,
            end=T0 + timedelta(minutes=30),
            rest_url=exchange.rest_url,
            pages_per_activity=1,
        )
        async with training_worker(client, settings) as task_queue:
            handle = await client.start_workflow(
                workflow_types.BACKFILL,
                request,
                id=f"capture-backfill-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                execution_timeout=TIMEOUT,
                result_type=BackfillProgress,
            )
            progress = await handle.result()
            print(f"BackfillWorkflow: {progress.pages} pages, {progress.trades_published} trades")
            await save(handle, BACKFILL_NAMES[-1])
    finally:
        await exchange.stop()


async def capture_news(client: Client, settings: Settings) -> None:
    """NewsIngestWorkflow over two new items from the local news server (RSS), and the SentimentWorkflow
    of one of them, scored by the stack's local LLM."""
    run = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(
                update={"news_task_queue": f"capture-news-{run}", "llm_task_queue": f"capture-llm-{run}"}
            ),
            "news": settings.news.model_copy(update={"cryptopanic_token": SecretStr("capture-token")}),
        }
    )
    migrate(settings.postgres)
    items = [item.model_copy(update={"id": f"{item.id}-{run}"}) for item in sample_news_items(2)]
    workers = build_news_workers(client, settings)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        async with NewsServer(items, page_size=3) as server:
            handle = await client.start_workflow(
                workflow_types.NEWS_INGEST,
                NewsIngestInput(
                    rss_feeds=[server.rss_url("all")], llm_task_queue=settings.temporal.llm_task_queue
                ),
                id=f"capture-news-ingest-{run}",
                task_queue=settings.temporal.news_task_queue,
                execution_timeout=TIMEOUT,
                result_type=NewsIngestResult,
            )
            result = await handle.result()
            print(f"NewsIngestWorkflow: {len(result.new)} new, {result.sentiment_workflows_started} started")
            children = [client.get_workflow_handle(sentiment_workflow_id(i.id)) for i in result.new]
            await asyncio.wait_for(asyncio.gather(*(c.result() for c in children)), TIMEOUT.total_seconds())
            await save(handle, "NewsIngestWorkflow")
            await save(children[0], "SentimentWorkflow")
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        for task in tasks:
            task.cancel()


async def capture_retention(client: Client, settings: Settings) -> None:
    """RetentionWorkflow, every kind on, scoped to objects of its own: an old prediction and dead letter
    of its pair and source (deleted), no models or studies under its prefixes, its own late_trades topic
    name (no such topic: left alone)."""
    run = uuid.uuid4().hex[:8]
    pair, source = unique_pair("R"), f"capture-retention-{run}"
    old = datetime.now(UTC) - timedelta(days=400)
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    try:
        prediction = Prediction(
            pair=pair,
            interval_s=60,
            horizon_s=60,
            made_at=old,
            feature_time=old,
            target_time=old,
            last_price=100.0,
            predicted_price=101.0,
            model_name=source,
            model_version="1",
        )
        await upsert_predictions(engine, [prediction])
        await insert_dead_letters(engine, [DeadLetter(source=source, reason="capture", raw="x", at=old)])
    finally:
        await engine.dispose()
    request = RetentionInput(
        scope=RetentionScope(
            pairs=[pair], dead_letter_sources=[source], model_prefix=f"{source}-", study_prefix=f"{source}-"
        )
    )
    async with training_worker(client, settings) as task_queue:
        handle = await client.start_workflow(
            workflow_types.RETENTION,
            request,
            id=source,
            task_queue=task_queue,
            execution_timeout=TIMEOUT,
            result_type=RetentionReport,
        )
        print(f"RetentionWorkflow: {(await handle.result()).summary()}")
        await save(handle, "RetentionWorkflow")


GROUPS: dict[str, tuple[list[str], Callable[[Client, Settings], Awaitable[None]]]] = {
    "training": ([f"TrainingWorkflow-{variant}" for *_, variant in TRAINING_VARIANTS], capture_training),
    "retrain": (["ScheduledRetrainWorkflow", "TrainingWorkflow-not-enough-data"], capture_retrain),
    "drift": (["DriftMonitorWorkflow-breach", "DriftMonitorWorkflow-report-only"], capture_drift),
    "backfill": (BACKFILL_NAMES, capture_backfill),
    "news": (["NewsIngestWorkflow", "SentimentWorkflow"], capture_news),
    "retention": (["RetentionWorkflow"], capture_retention),
}


async def main(groups: list[str]) -> None:
    base = get_settings()
    prefix = f"capture-{uuid.uuid4().hex[:8]}-"
    # Topics of their own (trades, news, drift reports), deleted at the end.
    settings = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": prefix}),
            "kraken": base.kraken.model_copy(update={"rest_min_interval_s": 0.3}),
        }
    )
    client = await temporal_client(settings)
    try:
        for group in groups:
            names, capture = GROUPS[group]
            if all(path_of(name).exists() for name in names):
                print(f"{group}: already captured ({', '.join(names)}), not re-recorded")
                continue
            await capture(client, settings)
    finally:
        names = sorted(t for t in await topic_names(settings.kafka) if t.startswith(prefix))
        if names:
            await delete_topics(settings.kafka, names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)} (default: all)"
    )
    groups = parser.parse_args().groups or list(GROUPS)
    if unknown := set(groups) - set(GROUPS):
        parser.error(f"unknown group(s) {sorted(unknown)}: choose from {', '.join(GROUPS)}")
    asyncio.run(main(groups))
