"""Temporal workers: training, drift and backfill, news, and LLM sentiment (each on its own task queue),
in one process: `python -m workflows.worker` or `cryptopredict worker`. At start it makes sure the news,
retrain and drift schedules exist and checks the LLM endpoint."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from temporalio.client import Client
from temporalio.worker import Worker

from activities.backfill import BackfillActivities
from activities.drift import DriftActivities
from activities.training import TrainingActivities
from activities.volatility import VolatilityActivities
from cryptopredict.orchestration import metrics_runtime, temporal_client
from cryptopredict.settings import Settings, get_settings
from workflows.backfill import BackfillWorkflow
from workflows.drift import DriftMonitorWorkflow
from workflows.interceptors import WorkflowMetrics
from workflows.training import ScheduledRetrainWorkflow, TrainingWorkflow

logger = logging.getLogger(__name__)


def build_worker(
    client: Client, settings: Settings, executor: concurrent.futures.Executor, task_queue: str | None = None
) -> Worker:
    """Sync training activities run on `executor`; the backfill activity is async on the event loop."""
    training = TrainingActivities(settings)
    backfill = BackfillActivities(settings)
    drift = DriftActivities(settings)
    volatility = VolatilityActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.training_task_queue,
        workflows=[TrainingWorkflow, ScheduledRetrainWorkflow, BackfillWorkflow, DriftMonitorWorkflow],
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
        ],
        activity_executor=executor,
        max_concurrent_activities=2,
        interceptors=[WorkflowMetrics()],
    )


def build_news_workers(client: Client, settings: Settings) -> list[Worker]:
    """News polling and the sentiment workflows on one queue; the LLM activity on its own queue, capped at
    `news.llm_concurrency` at once, because the model server is the bottleneck."""
    from activities.news import NewsActivities
    from workflows.news import NewsIngestWorkflow, SentimentWorkflow

    news = NewsActivities(settings)
    return [
        Worker(
            client,
            task_queue=settings.temporal.news_task_queue,
            workflows=[NewsIngestWorkflow, SentimentWorkflow],
            activities=[news.ingest_news],
            interceptors=[WorkflowMetrics()],
        ),
        Worker(
            client,
            task_queue=settings.temporal.llm_task_queue,
            activities=[news.score_news],
            max_concurrent_activities=settings.news.llm_concurrency,
        ),
    ]


async def run_worker(settings: Settings | None = None) -> None:
    from cryptopredict.llm_endpoint import ensure_llm_model
    from cryptopredict.orchestration import (
        ensure_drift_schedules,
        ensure_news_schedule,
        ensure_training_schedules,
    )

    settings = settings or get_settings()
    client = await temporal_client(settings, metrics_runtime(settings))
    await ensure_llm_model(settings.llm)
    if await ensure_news_schedule(settings, client):
        logger.info("created the news schedule (every %.0f s)", settings.news.poll_interval_s)
    for schedule_id in await ensure_training_schedules(settings, client):
        logger.info("created the retrain schedule %s", schedule_id)
    for schedule_id in await ensure_drift_schedules(settings, client):
        logger.info("created the drift schedule %s (every %.0f s)", schedule_id, settings.drift.every_s)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        workers = [build_worker(client, settings, executor), *build_news_workers(client, settings)]
        logger.info("workers on task queues %s", [w.task_queue for w in workers])
        await asyncio.gather(*(worker.run() for worker in workers))


async def run_training_worker(settings: Settings, task_queue: str | None = None) -> None:
    """Only the training and backfill queue (no schedules, no LLM check): for a machine that trains."""
    client = await temporal_client(settings, metrics_runtime(settings))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        worker = build_worker(client, settings, executor, task_queue=task_queue)
        logger.info("worker on task queue %s", worker.task_queue)
        await worker.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker())
