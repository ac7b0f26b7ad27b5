"""Starting workflows from Python (the CLI, the demo, tests): one place that knows ids and queues."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError

from cryptopredict.models.backfill import BackfillInput, BackfillProgress
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.settings import Settings
from cryptopredict.topics import backfill_workflow_id, training_workflow_id


async def temporal_client(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )


async def start_training(
    settings: Settings,
    request: TrainingInput,
    wait: bool = True,
    client: Client | None = None,
    task_queue: str | None = None,
) -> TrainingResult | None:
    """Starts the pair's TrainingWorkflow; a second start while one runs attaches to the running one."""
    client = client or await temporal_client(settings)
    handle = await client.start_workflow(
        "TrainingWorkflow",
        request,
        id=training_workflow_id(request.pair, request.interval_s),
        task_queue=task_queue or settings.temporal.training_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=TrainingResult,
    )
    return await handle.result() if wait else None


async def start_backfill(
    settings: Settings,
    request: BackfillInput,
    wait: bool = True,
    client: Client | None = None,
    task_queue: str | None = None,
) -> BackfillProgress | None:
    """Starts a BackfillWorkflow for the pair and range. The same range again attaches to the running
    one, or returns a completed run's result: a range is never published twice. A failed or
    terminated run may be started again."""
    client = client or await temporal_client(settings)
    workflow_id = backfill_workflow_id(request.pair, request.start, request.end)
    try:
        handle = await client.start_workflow(
            "BackfillWorkflow",
            request,
            id=workflow_id,
            task_queue=task_queue or settings.temporal.training_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            result_type=BackfillProgress,
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=BackfillProgress)
    return await handle.result() if wait else None
