"""Drift activities: thin adapters from the DriftMonitorWorkflow to the feature store, the outcome ledger,
MLflow, Temporal and Kafka; the arithmetic is cryptopredict.ml.drift.

- compute_drift: rebuilds the model inputs with the training code over the champion's training window
  and the recent window, and reads the champion's live figures; returns the report.
- start_drift_retrain: starts the target's TrainingWorkflow (id `training-<PAIR>-<interval>s-h<h>`)
  with the breaches as its reason, or attaches to the one running, or skips within the cooldown.
- record_drift_report: the report as a row of `drift_reports` and a record on the topic.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import heartbeating
from cryptopredict import topics, workflow_types
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.kafka_admin import ensure_topics
from cryptopredict.ml import drift, registry
from cryptopredict.ml.dataset import FEATURE_TIME, indicator_values
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftRecord,
    DriftReport,
    DriftTarget,
    DriftThresholds,
    RecordInput,
    RetrainOutcome,
    RetrainRequest,
)
from cryptopredict.orchestration import training_request
from cryptopredict.publisher import publish_records
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine, read_candles, read_indicator_values, sync_engine
from cryptopredict.store.drift import upsert_drift_records
from cryptopredict.store.ledger import ledger_summary
from cryptopredict.store.news import scored_sentiment_at_closes
from cryptopredict.topics import registered_model_name, training_workflow_id

logger = logging.getLogger(__name__)

# Memo keys of a TrainingWorkflow a drift breach started (shown in the Temporal UI).
MEMO_REASON = "reason"
MEMO_TRIGGERED_BY = "triggered_by"


def thresholds_of(request: DriftMonitorInput, settings: Settings) -> DriftThresholds:
    configured = settings.drift

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return DriftThresholds(
        psi=pick(request.psi_threshold, configured.psi_threshold),
        bins=pick(request.psi_bins, configured.psi_bins),
        min_rows=pick(request.min_rows, configured.min_rows),
        skill=pick(request.skill_threshold, configured.skill_threshold),
        min_outcomes=pick(request.min_outcomes, configured.min_outcomes),
    )


def training_window(params: dict[str, str]) -> tuple[datetime, datetime] | None:
    """The dataset range a retrain logged with its MLflow run (activities.training.build_training_dataset)."""
    if "dataset_start" not in params or "dataset_end" not in params:
        return None
    return datetime.fromisoformat(params["dataset_start"]), datetime.fromisoformat(params["dataset_end"])


class DriftActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._topics_ready = False

    def _champion(self, name: str) -> tuple[str | None, str | None, dict[str, str]]:
        """(version, kind, params of the run that trained it); Nones when there is no champion yet."""
        import mlflow

        client = mlflow.MlflowClient(self.settings.mlflow.tracking_uri)
        version = registry.current_champion(client, name)
        if version is None:
            return None, None, {}
        kind = (version.tags or {}).get(registry.KIND_TAG)
        params = dict(client.get_run(version.run_id).data.params) if version.run_id else {}
        return str(version.version), kind, params

    @activity.defn(name="compute_drift")
    def compute_drift(self, request: DriftMonitorInput) -> DriftReport:
        settings = self.settings
        thresholds = thresholds_of(request, settings)
        window = timedelta(seconds=request.recent_window_s or settings.drift.recent_window_s)
        pair, interval_s, horizon = request.pair, request.interval_s, request.horizon_candles
        name = registered_model_name(pair, interval_s, horizon)
        with heartbeating() as progress:
            version, kind, params = self._champion(name)
            target = DriftTarget(
                pair=pair,
                interval_s=interval_s,
                horizon_candles=horizon,
                model_name=name,
                model_version=version,
                model_kind=kind,
            )
            progress("champion read")
            engine = sync_engine(settings.postgres)
            try:
                candles = read_candles(engine, pair, interval_s)
                notes: list[str] = []
                if candles.empty:
                    empty = pd.DataFrame(columns=[FEATURE_TIME])
                    return drift.drift_report(
                        empty,
                        empty,
                        [],
                        None,
                        thresholds,
                        target=target,
                        checked_at=datetime.now(UTC),
                        reference_source="none",
                        notes=[f"no candles of {pair} at {interval_s}s: nothing to compare"],
                    )
                config = IndicatorConfig()
                stored = read_indicator_values(engine, pair, interval_s)
                values, _ = indicator_values(candles, pair, interval_s, stored, config)
                sentiment = scored_sentiment_at_closes(engine, pair, candles, interval_s)
                lags = int(params.get("lags", settings.model.lags))
                progress("building model inputs")
                rows, names = drift.model_input_rows(candles, interval_s, lags, values, config, sentiment)

                # The recent window ends at the newest candle, not the wall clock: a replay of old
                # trades is checked the same way as the live feed.
                newest = pd.Timestamp(candles["window_start"].iloc[-1]).to_pydatetime()
                recent_after = newest - window
                trained = training_window(params)
                if trained is not None:
                    source = "training"
                    ref_after, ref_upto = trained[0] - timedelta(microseconds=1), trained[1]
                    reference_span = trained
                    overlap = len(drift.between(rows, max(ref_after, recent_after), ref_upto))
                    if overlap:
                        notes.append(f"the training window overlaps the recent window by {overlap} rows")
                else:
                    # Persistence (or a version without a logged dataset) was trained on nothing: compare
                    # with the window of the same length just before the recent one.
                    source = "preceding"
                    ref_after, ref_upto = recent_after - window, recent_after
                    reference_span = (ref_after, ref_upto)
                    notes.append(
                        f"champion {'none' if version is None else f'v{version} ({kind})'} has no training "
                        "window: the reference is the window of the same length before the recent one"
                    )
                reference = drift.between(rows, ref_after, ref_upto)
                recent = drift.between(rows, recent_after, newest)
                wanted = request.features if request.features is not None else settings.drift.features
                features = wanted or names
                if sentiment is None:
                    notes.append(f"no sentiment scores for {pair}'s coin: sentiment not compared")

                figures = None
                if version is not None:
                    summary = ledger_summary(engine, pair, interval_s, recent_after)
                    mine = [f for f in summary if f.model_name == name and f.model_version == version]
                    figures = mine[0] if mine else None
            finally:
                engine.dispose()
            progress("psi")
            return drift.drift_report(
                reference,
                recent,
                features,
                figures,
                thresholds,
                target=target,
                checked_at=datetime.now(UTC),
                reference_source=source,
                reference_span=reference_span,
                recent_span=(recent_after, newest),
                notes=notes,
            )

    @activity.defn(name="start_drift_retrain")
    async def start_drift_retrain(self, request: RetrainRequest) -> RetrainOutcome:
        """Starts the target's TrainingWorkflow under its well-known id, unless one is running (then the
        breach attaches to it: the server refuses a second run of the id) or one ended within the
        cooldown. Safe to retry: a run this monitor started is recognised by its memo."""
        report, monitor = request.report, request.monitor
        target = report.target
        workflow_id = training_workflow_id(target.pair, target.interval_s, target.horizon_candles)
        client = activity.client()
        cooldown = timedelta(
            seconds=monitor.retrain_cooldown_s
            if monitor.retrain_cooldown_s is not None
            else self.settings.drift.retrain_cooldown_s
        )
        try:
            last = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            last = None
        if last is not None:
            memo = await last.memo()
            if memo.get(MEMO_TRIGGERED_BY) == request.triggered_by:  # this activity, retried
                return RetrainOutcome(
                    action="started",
                    workflow_id=workflow_id,
                    run_id=last.run_id,
                    detail=report.retrain_reason(),
                )
            ended = last.close_time
            if last.status != WorkflowExecutionStatus.RUNNING and ended is not None:
                since = datetime.now(UTC) - ended
                if since < cooldown:
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
        reason = report.retrain_reason()
        training = training_request(
            self.settings,
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
        logger.info("%s: drift retrain %s started: %s", target.model_name, handle.result_run_id, reason)
        return RetrainOutcome(
            action="started", workflow_id=workflow_id, run_id=handle.result_run_id, detail=reason
        )

    @activity.defn(name="record_drift_report")
    async def record_drift_report(self, request: RecordInput) -> None:
        """The row of `drift_reports` (PostgreSQL mode; RisingWave ingests the topic itself) and the record
        on topic `drift_reports`, keyed by target. Idempotent: the key is the monitor's run."""
        record = DriftRecord.of(request.report, request.workflow_id, request.run_id)
        if self.settings.store.sink_enabled:
            engine = async_engine(self.settings.postgres)
            try:
                await upsert_drift_records(engine, [record])
            finally:
                await engine.dispose()
        if not self._topics_ready:
            await ensure_topics(self.settings.kafka)
            self._topics_ready = True
        topic = topics.topic_name(topics.DRIFT_REPORTS, self.settings.kafka.topic_prefix)
        await publish_records(
            self.settings.kafka,
            topic,
            [(record.model_name.encode(), record.to_json_bytes())],
        )
