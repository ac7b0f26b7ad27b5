"""Temporal worker for training and backfill: `python -m workflows.worker` or `cryptopredict worker`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from temporalio.client import Client
from temporalio.worker import Worker

from activities.backfill import BackfillActivities
from activities.training import TrainingActivities
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import Settings, get_settings
from workflows.backfill import BackfillWorkflow
from workflows.training import TrainingWorkflow

logger = logging.getLogger(__name__)


def build_worker(
    client: Client, settings: Settings, executor: concurrent.futures.Executor, task_queue: str | None = None
) -> Worker:
    """Sync training activities run on `executor`; the backfill activity is async on the event loop."""
    training = TrainingActivities(settings)
    backfill = BackfillActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.training_task_queue,
        workflows=[TrainingWorkflow, BackfillWorkflow],
        activities=[
            training.build_training_dataset,
            training.fit_candidate,
            training.register_and_promote,
            backfill.backfill_trade_pages,
        ],
        activity_executor=executor,
        max_concurrent_activities=2,
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client = await temporal_client(settings)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        worker = build_worker(client, settings, executor)
        logger.info("worker on task queue %s", settings.temporal.training_task_queue)
        await worker.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker())
