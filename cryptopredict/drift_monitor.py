"""The DriftMonitorWorkflow's steps: each function is what one of its activities does, so the activities
(activities/drift.py) only adapt Temporal to it.

- check_drift: reads the champion from the registry and the target's candles, indicators, sentiment and
  live outcomes from the store; cryptopredict.ml.drift_check decides what to compare, ml.drift computes.
- start_retrain: starts the target's TrainingWorkflow (id `training-<PAIR>-<interval>s-h<h>`) with the
  breaches as its reason, or attaches to the one running, or skips within the cooldown (retrain_verdict).
- record_report: the report as a row of `drift_reports` and a record on the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from cryptopredict import topics, workflow_types
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml import registry
from cryptopredict.ml.drift import model_input_rows
from cryptopredict.ml.drift_check import (
    Champion,
    champion_figures,
    check_settings,
    compare_windows,
    newest_candle,
    nothing_to_compare,
    windows,
)
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftRecord,
    DriftReport,
    DriftTarget,
    RetrainOutcome,
    RetrainRequest,
)
from cryptopredict.orchestration import training_request
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine, sync_engine
from cryptopredict.store.drift import upsert_drift_records
from cryptopredict.store.inputs import read_stored_inputs
from cryptopredict.store.ledger import ledger_summary
from cryptopredict.topic_writer import TopicWriter
from cryptopredict.topics import registered_model_name, training_workflow_id

logger = logging.getLogger(__name__)

# What a long step reports as it goes (an activity's heartbeat details).
Progress = Callable[[str], None]

# Memo keys of a TrainingWorkflow a drift breach started (shown in the Temporal UI).
MEMO_REASON = "reason"
MEMO_TRIGGERED_BY = "triggered_by"


def read_champion(tracking_uri: str, name: str) -> Champion:
    """The registered model's champion and the params of the run that trained it."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    version = registry.current_champion(client, name)
    if version is None:
        return Champion()
    params = dict(client.get_run(version.run_id).data.params) if version.run_id else {}
    return Champion(str(version.version), (version.tags or {}).get(registry.KIND_TAG), params)


def check_drift(settings: Settings, request: DriftMonitorInput, progress: Progress) -> DriftReport:
    """PSI of the champion's model inputs between its training window (or the window before the recent
    one) and the recent window, and its live skill from the outcome ledger."""
    check = check_settings(request, settings.drift)
    pair, interval_s = request.pair, request.interval_s
    name = registered_model_name(pair, interval_s, request.horizon_candles)
    champion = read_champion(settings.mlflow.tracking_uri, name)
    target = DriftTarget(
        pair=pair,
        interval_s=interval_s,
        horizon_candles=request.horizon_candles,
        model_name=name,
        model_version=champion.version,
        model_kind=champion.kind,
    )
    progress("champion read")
    engine = sync_engine(settings.postgres)
    try:
        config = IndicatorConfig()
        inputs = read_stored_inputs(engine, pair, interval_s, config)
        if inputs is None:
            return nothing_to_compare(target, check, datetime.now(UTC))
        sentiment = inputs.sentiment
        progress("building model inputs")
        lags = champion.lags(settings.model.lags)
        rows, names = model_input_rows(inputs.candles, interval_s, lags, inputs.indicators, config, sentiment)
        span = windows(newest_candle(inputs.candles), check.recent_window, champion)
        summary = ledger_summary(engine, pair, interval_s, span.recent_after) if champion.version else []
    finally:
        engine.dispose()
    progress("psi")
    return compare_windows(
        rows,
        names,
        span,
        champion_figures(summary, target),
        check,
        target=target,
        champion=champion,
        sentiment_scored=sentiment is not None,
        checked_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class LastRetrain:
    """The latest run of the target's TrainingWorkflow id, as the server describes it."""

    run_id: str
    status: WorkflowExecutionStatus | None
    closed_at: datetime | None
    triggered_by: str | None  # its memo's MEMO_TRIGGERED_BY: the drift run that started it, if one did


def retrain_verdict(
    last: LastRetrain | None,
    request: RetrainRequest,
    workflow_id: str,
    cooldown: timedelta,
    now: datetime,
) -> RetrainOutcome | None:
    """What a breach does without starting anything: reports the retrain it started itself (the
    activity retried after the start), or skips when the last retrain ended within the cooldown (a retrain
    the gate did not promote leaves the drift in place). None: start one; the server refuses it while a
    retrain of the target runs, and the breach attaches to that."""
    if last is None:
        return None
    if last.triggered_by == request.triggered_by:
        return RetrainOutcome(
            action="started",
            workflow_id=workflow_id,
            run_id=last.run_id,
            detail=request.report.retrain_reason(),
        )
    if last.status == WorkflowExecutionStatus.RUNNING or last.closed_at is None:
        return None
    since = now - last.closed_at
    if since >= cooldown:
        return None
    return RetrainOutcome(
        action="skipped",
        workflow_id=workflow_id,
        run_id=last.run_id,
        detail=(
            f"the last retrain ended {since.total_seconds() / 60:.0f} min ago "
            f"({last.status.name if last.status else 'closed'}), within the "
            f"{cooldown.total_seconds() / 3600:g} h cooldown"
        ),
    )


async def last_retrain(client: Client, workflow_id: str) -> LastRetrain | None:
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return None
    memo = await described.memo()
    return LastRetrain(
        run_id=described.run_id,
        status=described.status,
        closed_at=described.close_time,
        triggered_by=memo.get(MEMO_TRIGGERED_BY),
    )


async def start_retrain(settings: Settings, client: Client, request: RetrainRequest) -> RetrainOutcome:
    """Starts the target's TrainingWorkflow under its well-known id, unless retrain_verdict says
    otherwise or one is running (the breach attaches to it). Safe to retry: a run this monitor started
    is recognised by its memo."""
    report, monitor = request.report, request.monitor
    target = report.target
    workflow_id = training_workflow_id(target.pair, target.interval_s, target.horizon_candles)
    cooldown = check_settings(monitor, settings.drift).retrain_cooldown
    last = await last_retrain(client, workflow_id)
    verdict = retrain_verdict(last, request, workflow_id, cooldown, datetime.now(UTC))
    if verdict is not None:
        return verdict
    reason = report.retrain_reason()
    training = training_request(
        settings,
        target.pair,
        target.interval_s,
        target.horizon_candles,
        **(monitor.training | {"reason": reason}),
    )
    try:
        handle = await client.start_workflow(
            workflow_types.TRAINING,
            training,
            id=workflow_id,
            task_queue=request.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={MEMO_REASON: reason, MEMO_TRIGGERED_BY: request.triggered_by},
            static_summary=f"retrain on drift ({len(report.breaches)} breaches)",
            static_details=f"{reason}\n\nstarted by {request.triggered_by}",
        )
    except WorkflowAlreadyStartedError as running:
        return RetrainOutcome(
            action="attached",
            workflow_id=workflow_id,
            run_id=running.run_id,
            detail="a retrain of this target is already running; the breach attaches to it",
        )
    return RetrainOutcome(
        action="started", workflow_id=workflow_id, run_id=handle.result_run_id, detail=reason
    )


async def record_report(settings: Settings, record: DriftRecord, writer: TopicWriter) -> None:
    """The row of `drift_reports` (PostgreSQL mode; RisingWave ingests the topic itself) and the record
    on topic `drift_reports`, keyed by target. Idempotent: the key is the monitor's run."""
    if settings.store.sink_enabled:
        engine = async_engine(settings.postgres)
        try:
            await upsert_drift_records(engine, [record])
        finally:
            await engine.dispose()
    await writer.publish(topics.DRIFT_REPORTS, [(record.model_name.encode(), record.to_json_bytes())])
