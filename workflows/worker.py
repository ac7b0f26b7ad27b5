"""Temporal workers: training, drift and backfill, news, and LLM sentiment (each on its own task queue),
in one process: `python -m workflows.worker` or `cryptopredict worker`, or only some of the queues
(`cryptopredict worker --queues training`), so that each queue can run on machines of its own. At start a
worker makes sure the schedules of the queues it serves exist (retrain, drift and retention: training;
news-ingest: news) and, serving the LLM queue, checks the LLM endpoint."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.worker import Worker

from activities.backfill import BackfillActivities
from activities.drift import DriftActivities
from activities.retention import RetentionActivities
from activities.training import TrainingActivities
from activities.volatility import VolatilityActivities
from cryptopredict.orchestration import metrics_runtime, temporal_client
from cryptopredict.settings import Settings, get_settings
from workflows.backfill import BackfillWorkflow
from workflows.drift import DriftMonitorWorkflow
from workflows.interceptors import WorkflowMetrics
from workflows.retention import RetentionWorkflow
from workflows.training import ScheduledRetrainWorkflow, TrainingWorkflow

if TYPE_CHECKING:
    from activities.news import NewsActivities

logger = logging.getLogger(__name__)


def build_worker(
    client: Client, settings: Settings, executor: concurrent.futures.Executor, task_queue: str | None = None
) -> Worker:
    """Sync training activities run on `executor`; the backfill activity is async on the event loop."""
    training = TrainingActivities(settings)
    backfill = BackfillActivities(settings)
    drift = DriftActivities(settings)
    volatility = VolatilityActivities(settings)
    retention = RetentionActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.training_task_queue,
        workflows=[
            TrainingWorkflow,
            ScheduledRetrainWorkflow,
            BackfillWorkflow,
            DriftMonitorWorkflow,
            RetentionWorkflow,
        ],
        activities=[
            training.start_scheduled_retrain,
            training.prepare_training_dataset,
            training.build_training_dataset,
            training.ensure_champion,
            training.screen_candidates,
            training.tune_trials,
            training.tune_candidate,
            training.evaluate_challenger,
            training.register_challenger,
            training.promote_or_keep,
            volatility.prepare_volatility_dataset,
            volatility.build_volatility_dataset,
            volatility.ensure_volatility_champion,
            volatility.screen_volatility,
            volatility.tune_volatility_trials,
            volatility.evaluate_volatility,
            backfill.publish_trade_pages,
            backfill.backfill_trade_pages,
            drift.compute_drift,
            drift.start_drift_retrain,
            drift.record_drift_report,
            retention.prune_predictions,
            retention.prune_dead_letters,
            retention.set_late_trades_retention,
            retention.prune_optuna_studies,
            retention.prune_model_versions,
        ],
        activity_executor=executor,
        max_concurrent_activities=2,
        interceptors=[WorkflowMetrics()],
    )


# The task queues a worker process can serve, by their role (their names are settings.temporal.*_task_queue).
QUEUES = ("training", "news", "llm")


def parse_queues(text: str) -> tuple[str, ...]:
    """`training,news` -> ("training", "news"), in QUEUES order; ValueError for an unknown or no queue."""
    named = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(named - set(QUEUES))
    if unknown or not named:
        raise ValueError(f"unknown task queue(s) {unknown}: name one or more of {', '.join(QUEUES)}")
    return tuple(queue for queue in QUEUES if queue in named)


def build_news_worker(client: Client, settings: Settings, news: NewsActivities | None = None) -> Worker:
    """News polling and the sentiment workflows (`news`: activities shared with the LLM queue's worker)."""
    from workflows.news import NewsIngestWorkflow, SentimentWorkflow

    return Worker(
        client,
        task_queue=settings.temporal.news_task_queue,
        workflows=[NewsIngestWorkflow, SentimentWorkflow],
        activities=[(news or news_activities(settings)).ingest_news],
        interceptors=[WorkflowMetrics()],
    )


def build_llm_worker(client: Client, settings: Settings, news: NewsActivities | None = None) -> Worker:
    """The LLM activity on its own queue, capped at `news.llm_concurrency` at once, because the model server
    is the bottleneck."""
    return Worker(
        client,
        task_queue=settings.temporal.llm_task_queue,
        activities=[(news or news_activities(settings)).score_news],
        max_concurrent_activities=settings.news.llm_concurrency,
    )


def build_news_workers(client: Client, settings: Settings) -> list[Worker]:
    """The news and the LLM queue's workers, sharing one set of activities (one producer, one engine)."""
    news = news_activities(settings)
    return [build_news_worker(client, settings, news), build_llm_worker(client, settings, news)]


def news_activities(settings: Settings) -> NewsActivities:
    from activities.news import NewsActivities

    return NewsActivities(settings)


async def run_worker(
    settings: Settings | None = None,
    queues: Collection[str] = QUEUES,
    *,
    schedules: bool = True,
    training_task_queue: str | None = None,
) -> None:
    """Serves `queues` (default: all) until cancelled. With `schedules`, first creates or updates the
    schedules whose workflows run on them; serving `llm`, first checks the LLM endpoint.
    `training_task_queue` serves the training queue under another name (the schedules keep starting
    their workflows on settings.temporal.training_task_queue)."""
    from cryptopredict.llm_endpoint import ensure_llm_model
    from cryptopredict.orchestration import (
        ensure_drift_schedules,
        ensure_news_schedule,
        ensure_retention_schedule,
        ensure_training_schedules,
    )

    settings = settings or get_settings()
    queues = parse_queues(",".join(queues))
    client = await temporal_client(settings, metrics_runtime(settings))
    if "llm" in queues:
        await ensure_llm_model(settings.llm)
    if schedules and "news" in queues and await ensure_news_schedule(settings, client):
        logger.info("created the news schedule (every %.0f s)", settings.news.poll_interval_s)
    if schedules and "training" in queues:
        for schedule_id in await ensure_training_schedules(settings, client):
            logger.info("created the retrain schedule %s", schedule_id)
        for schedule_id in await ensure_drift_schedules(settings, client):
            logger.info("created the drift schedule %s (every %.0f s)", schedule_id, settings.drift.every_s)
        if await ensure_retention_schedule(settings, client):
            logger.info("created the retention schedule (every %.0f s)", settings.retention.every_s)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        workers = []
        if "training" in queues:
            workers.append(build_worker(client, settings, executor, task_queue=training_task_queue))
        news = news_activities(settings) if {"news", "llm"} & set(queues) else None
        if "news" in queues:
            workers.append(build_news_worker(client, settings, news))
        if "llm" in queues:
            workers.append(build_llm_worker(client, settings, news))
        logger.info("workers on task queues %s", [w.task_queue for w in workers])
        await asyncio.gather(*(worker.run() for worker in workers))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker())
