"""Starting workflows from Python (the CLI, the demo, tests): one place that knows ids and queues."""

from __future__ import annotations

import itertools
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from cryptopredict import workflow_types
from cryptopredict.features.cross_venue import source_markets
from cryptopredict.models.backfill import BackfillInput, BackfillProgress
from cryptopredict.models.drift import DriftMonitorInput, DriftReport
from cryptopredict.models.news_flow import NewsIngestInput
from cryptopredict.models.retention import PRUNE_KINDS, RetentionAges, RetentionInput
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.settings import Settings
from cryptopredict.temporal_connect import connect_temporal
from cryptopredict.topics import (
    RETENTION_SCHEDULE_ID,
    backfill_workflow_id,
    drift_schedule_id,
    drift_workflow_id,
    news_schedule_id,
    training_schedule_id,
    training_workflow_id,
)

logger = logging.getLogger(__name__)


async def temporal_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    """The project's Temporal client: TLS and API key from settings.temporal, pydantic payloads."""
    return await connect_temporal(settings.temporal, data_converter=pydantic_data_converter, runtime=runtime)


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime serving the SDK's metrics (and ours, made through its meter) on the worker's
    metrics port; None (the default runtime, no endpoint) when the port is off or taken."""
    port = settings.metrics.worker_port
    if port < 0:
        return None
    try:
        telemetry = TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{settings.metrics.host}:{port}", durations_as_seconds=True
            )
        )
        return Runtime(telemetry=telemetry)
    except Exception as exc:  # the SDK reports a taken port as a generic error; metrics must not stop work
        logger.warning("no worker metrics endpoint on port %d: %s", port, exc)
        return None


def training_request(
    settings: Settings, pair: str, interval_s: int, horizon_candles: int, **extra: Any
) -> TrainingInput:
    """A retrain of (pair, interval, horizon) with the configured model settings; `extra` overrides."""
    model = settings.model
    cross_venue = source_markets(pair, settings.features.cross_venue, settings.venue_pairs)
    configured: dict[str, Any] = {
        "lags": model.lags,
        "cross_venue": list(cross_venue.values()),
        "cross_venue_lags": settings.features.cross_venue_lags,
        "test_fraction": model.test_fraction,
        "folds": model.folds,
        "trials": model.trials,
        "tuning_batches": model.tuning_batches,
        "interval_coverage": model.interval_coverage,
        "dm_alpha": model.dm_alpha,
        "min_skill": model.min_skill,
    }
    return TrainingInput(
        pair=pair, interval_s=interval_s, horizon_candles=horizon_candles, **(configured | extra)
    )


async def start_training(
    settings: Settings,
    request: TrainingInput,
    wait: bool = True,
    client: Client | None = None,
    task_queue: str | None = None,
) -> TrainingResult | None:
    """Starts the target's TrainingWorkflow. The id is the target's, so a second start while a retrain
    of the same (pair, interval, horizon, price or volatility) runs attaches to it: two can never run at
    once."""
    client = client or await temporal_client(settings)
    handle = await client.start_workflow(
        workflow_types.TRAINING,
        request,
        id=training_workflow_id(
            request.pair, request.interval_s, request.horizon_candles, target=request.target
        ),
        task_queue=task_queue or settings.temporal.training_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=TrainingResult,
    )
    return await handle.result() if wait else None


async def ensure_training_schedules(settings: Settings, client: Client | None = None) -> list[str]:
    """Creates the retrain schedule of every configured pair and target (interval and horizon from
    settings), or updates it to the settings; returns the ids created. Each starts a ScheduledRetrainWorkflow, which
    starts the target's TrainingWorkflow under its well-known id: a retrain already running is never
    doubled."""
    if settings.model.retrain_every_s <= 0:
        return []
    actions = {
        training_schedule_id(pair, interval_s, horizon, target=target): ScheduleActionStartWorkflow(
            workflow_types.SCHEDULED_RETRAIN,
            training_request(settings, pair, interval_s, horizon, reason="schedule", target=target),
            id=training_schedule_id(pair, interval_s, horizon, target=target),
            task_queue=settings.temporal.training_task_queue,
        )
        for (pair, interval_s, horizon), target in itertools.product(
            settings.forecast_targets(), settings.model.targets
        )
    }
    return await _ensure_schedules(
        client or await temporal_client(settings), actions, retrain_every_s(settings, len(actions))
    )


def retrain_every_s(settings: Settings, schedules: int) -> float:
    """How often each of `schedules` retrain schedules runs: model.retrain_every_s, stretched so that all
    together stay within model.max_retrains_per_day."""
    return max(settings.model.retrain_every_s, 86_400.0 * schedules / settings.model.max_retrains_per_day)


async def ensure_drift_schedules(settings: Settings, client: Client | None = None) -> list[str]:
    """Creates the drift monitor schedule of every configured (pair, horizon), or updates it to the
    settings; returns the ids created. The input leaves the thresholds unset, so each check uses the worker's `drift`
    settings of the moment. Overlaps are skipped."""
    if settings.drift.every_s <= 0:
        return []
    actions = {
        drift_schedule_id(pair, interval_s, horizon): ScheduleActionStartWorkflow(
            workflow_types.DRIFT_MONITOR,
            DriftMonitorInput(pair=pair, interval_s=interval_s, horizon_candles=horizon),
            id=drift_workflow_id(pair, interval_s, horizon),
            task_queue=settings.temporal.training_task_queue,
        )
        for pair, interval_s, horizon in settings.forecast_targets()
    }
    return await _ensure_schedules(client or await temporal_client(settings), actions, settings.drift.every_s)


async def _ensure_schedules(
    client: Client, actions: dict[str, ScheduleActionStartWorkflow], every_s: float
) -> list[str]:
    """Creates or updates each schedule (id -> action, every `every_s`, overlaps skipped); returns the ids
    created."""
    created = []
    for schedule_id, action in actions.items():
        schedule = Schedule(
            action=action,
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_s))]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        if await create_or_update_schedule(client, schedule_id, schedule):
            created.append(schedule_id)
    return created


async def check_drift(
    settings: Settings,
    request: DriftMonitorInput,
    wait: bool = True,
    client: Client | None = None,
    task_queue: str | None = None,
) -> DriftReport | None:
    """Runs one DriftMonitorWorkflow now (id `drift-<target>-<unique>`, beside the scheduled ones)."""
    import uuid

    client = client or await temporal_client(settings)
    workflow_id = drift_workflow_id(request.pair, request.interval_s, request.horizon_candles)
    handle = await client.start_workflow(
        workflow_types.DRIFT_MONITOR,
        request,
        id=f"{workflow_id}-manual-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue or settings.temporal.training_task_queue,
        result_type=DriftReport,
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
            workflow_types.BACKFILL,
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


def news_ingest_input(settings: Settings) -> NewsIngestInput:
    news = settings.news
    return NewsIngestInput(
        cryptopanic_url=news.cryptopanic_url if news.cryptopanic_token is not None else None,
        rss_feeds=news.rss_feeds,
        currencies=news.currencies,
        llm_task_queue=settings.temporal.llm_task_queue,
    )


async def ensure_news_schedule(settings: Settings, client: Client | None = None) -> bool:
    """Creates the news polling schedule, or updates it to the settings; True when this call created it.
    Safe to call at every worker start: the schedule id is fixed, so there is only ever one."""
    client = client or await temporal_client(settings)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            workflow_types.NEWS_INGEST,
            news_ingest_input(settings),
            id=news_schedule_id(settings.namespace),
            task_queue=settings.temporal.news_task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.news.poll_interval_s))]
        ),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            catchup_window=timedelta(seconds=settings.news.catch_up_window_s),
        ),
    )
    return await create_or_update_schedule(client, news_schedule_id(settings.namespace), schedule)


def retention_input(settings: Settings) -> RetentionInput:
    """The scheduled RetentionWorkflow's input: every kind, at the ages of the settings (a workflow reads no
    settings; the schedule is updated to them at each worker start)."""
    retention = settings.retention
    ages = RetentionAges(**{f"{kind}_days": getattr(retention, f"{kind}_days") for kind in PRUNE_KINDS})
    return RetentionInput(ages=ages, batch_rows=retention.batch_rows)


async def ensure_retention_schedule(settings: Settings, client: Client | None = None) -> bool:
    """Creates the retention schedule on the training queue, or updates it to the settings; True when this
    call created it. `retention.every_s` 0 leaves it alone (pause or delete an existing one by hand), and
    so does a worker in a namespace (a demo's or a test's): the one schedule prunes the whole deployment."""
    if settings.retention.every_s <= 0 or settings.namespace is not None:
        return False
    action = ScheduleActionStartWorkflow(
        workflow_types.RETENTION,
        retention_input(settings),
        id=RETENTION_SCHEDULE_ID,
        task_queue=settings.temporal.training_task_queue,
    )
    created = await _ensure_schedules(
        client or await temporal_client(settings), {RETENTION_SCHEDULE_ID: action}, settings.retention.every_s
    )
    return bool(created)


async def create_or_update_schedule(client: Client, schedule_id: str, schedule: Schedule) -> bool:
    """Creates the schedule, or gives an existing one this action, spec and policy (so a changed setting
    takes effect at the next worker start) while keeping its state: a schedule a person paused stays
    paused. True when this call created it."""
    try:
        await client.create_schedule(schedule_id, schedule)
        return True
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        kept = current.description.schedule
        return ScheduleUpdate(
            schedule=Schedule(
                action=schedule.action, spec=schedule.spec, policy=schedule.policy, state=kept.state
            )
        )

    await client.get_schedule_handle(schedule_id).update(update)
    return False
