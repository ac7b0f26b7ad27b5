"""Every workflow type replays the histories of real runs committed in tests/histories/ (captured once from
the local stack by tests/histories/capture.py): a change to workflow code that would break a running
workflow of the released code fails here, without the stack.

A history that stops replaying is never re-recorded to make a change pass: guard the change with
`workflow.patched()` (or a new workflow type) instead, so both the old histories and new runs replay.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

import workflows
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftReport,
    RecordInput,
    RetrainOutcome,
    RetrainRequest,
)
from workflows.backfill import BackfillWorkflow
from workflows.drift import DriftMonitorWorkflow
from workflows.interceptors import WorkflowMetrics
from workflows.news import NewsIngestWorkflow, SentimentWorkflow
from workflows.retention import RetentionWorkflow
from workflows.training import ScheduledRetrainWorkflow, TrainingWorkflow

pytestmark = pytest.mark.unit

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# What the workers register (workflows/worker.py: build_worker and build_news_workers).
WORKFLOWS = [
    TrainingWorkflow,
    ScheduledRetrainWorkflow,
    BackfillWorkflow,
    DriftMonitorWorkflow,
    NewsIngestWorkflow,
    SentimentWorkflow,
    RetentionWorkflow,
]
# The histories every workflow type must have, by file: both targets of a retrain, its early failure, and
# the drift monitor's two branches.
EXPECTED = {
    "TrainingWorkflow-price",
    "TrainingWorkflow-volatility",
    "TrainingWorkflow-price-dataset-input",
    "TrainingWorkflow-volatility-dataset-input",
    "TrainingWorkflow-not-enough-data",
    "ScheduledRetrainWorkflow",
    "BackfillWorkflow",
    "BackfillWorkflow-trade-pages-input",
    "DriftMonitorWorkflow-breach",
    "DriftMonitorWorkflow-report-only",
    "NewsIngestWorkflow",
    "SentimentWorkflow",
    "RetentionWorkflow",
}
FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def workflow_type(path: Path) -> str:
    started = json.loads(path.read_text())["events"][0]
    return started["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def replayer(*classes: type) -> Replayer:
    """As the workers run them: the project's pydantic payloads and the worker interceptor."""
    return Replayer(
        workflows=list(classes or WORKFLOWS),
        data_converter=pydantic_data_converter,
        interceptors=[WorkflowMetrics()],
    )


def test_every_workflow_type_has_committed_histories():
    # Every workflow class in workflows/ (not the worker module, which defines none and imports every
    # activity's dependencies) has histories here.
    modules = [info.name for info in pkgutil.iter_modules(workflows.__path__) if info.name != "worker"]
    defined = {
        cls.__temporal_workflow_definition.name
        for name in modules
        for _, cls in inspect.getmembers(importlib.import_module(f"workflows.{name}"), inspect.isclass)
        if hasattr(cls, "__temporal_workflow_definition")
    }
    assert defined == {cls.__temporal_workflow_definition.name for cls in WORKFLOWS}  # type: ignore[attr-defined]
    assert {p.stem for p in FILES} >= EXPECTED
    assert {workflow_type(p) for p in FILES} == defined


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_a_committed_history_replays_without_nondeterminism(path: Path):
    result = await replayer().replay_workflow(load(path))
    assert result.replay_failure is None


# --- the replay test can fail: a copy of DriftMonitorWorkflow that records the report before it starts
# the retrain, the kind of harmless-looking reordering that breaks every running workflow.


@workflow.defn(name="DriftMonitorWorkflow", sandboxed=False)
class ReorderedDriftMonitorWorkflow:
    @workflow.run
    async def run(self, request: DriftMonitorInput) -> DriftReport:
        retry = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=2))
        info = workflow.info()
        report: DriftReport = await workflow.execute_activity(
            "compute_drift",
            request,
            result_type=DriftReport,
            start_to_close_timeout=timedelta(minutes=20),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=retry,
        )
        await workflow.execute_activity(  # moved up: was after start_drift_retrain
            "record_drift_report",
            RecordInput(report=report, workflow_id=info.workflow_id, run_id=info.run_id),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=retry,
        )
        if report.breaches and request.retrain:
            outcome: RetrainOutcome = await workflow.execute_activity(
                "start_drift_retrain",
                RetrainRequest(
                    report=report,
                    monitor=request,
                    triggered_by=f"{info.workflow_id}/{info.run_id}",
                    task_queue=request.training_task_queue or info.task_queue,
                ),
                result_type=RetrainOutcome,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=retry,
            )
            report = report.model_copy(update={"retrain": outcome})
        return report


async def test_reordered_activities_fail_the_replay():
    history = load(HISTORIES / "DriftMonitorWorkflow-breach.json")
    reordered = Replayer(
        workflows=[ReorderedDriftMonitorWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    with pytest.raises(
        NondeterminismError,
        match=r"Activity type of scheduled event 'start_drift_retrain' does not match .* 'record_drift_report'",
    ):
        await reordered.replay_workflow(history)
