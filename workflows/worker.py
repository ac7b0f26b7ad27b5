"""Temporal worker for the training task queue: `python -m workflows.worker` or `cryptopredict worker`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.training import TrainingActivities
from cryptopredict.settings import Settings, get_settings
from workflows.training import TrainingWorkflow

logger = logging.getLogger(__name__)


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )


def training_worker(
    client: Client, settings: Settings, executor: concurrent.futures.Executor, task_queue: str | None = None
) -> Worker:
    activities = TrainingActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.training_task_queue,
        workflows=[TrainingWorkflow],
        activities=[
            activities.build_training_dataset,
            activities.fit_candidate,
            activities.register_and_promote,
        ],
        activity_executor=executor,
        max_concurrent_activities=2,
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client = await connect(settings)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        worker = training_worker(client, settings, executor)
        logger.info("training worker on task queue %s", settings.temporal.training_task_queue)
        await worker.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker())
