"""DriftMonitorWorkflow on the real Temporal server, feature store, outcome ledger, MLflow and Kafka.

A champion is trained by the real TrainingWorkflow on a calm regime; then the replay shifts (volatility
x5, the structure the champion learned gone) and the champion's live predictions lose to persistence.
Two drift checks at once and a third after the retrain start exactly one TrainingWorkflow, whose input
names the breaches. On an unchanged random walk nothing is started."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.service import RPCError, RPCStatusCode
from topic_prefixes import session_pair

from cryptopredict.kafka_admin import read_topic
from cryptopredict.models import Candle, Prediction
from cryptopredict.models.drift import DriftMonitorInput, DriftRecord, DriftReport
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.orchestration import check_drift, temporal_client
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles, upsert_predictions
from cryptopredict.store.drift import read_drift_reports
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import (
    DRIFT_REPORTS,
    drift_workflow_id,
    registered_model_name,
    topic_name,
    training_workflow_id,
)
from workflows.worker import build_worker

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CALM, SHIFTED = 1400, 600  # candles
RECENT_S = SHIFTED * 60
# Small budgets for every retrain in this file: the steps are the real ones.
BUDGET = {
    "lags": 5,
    "min_rows": 80,
    "folds": 2,
    "trials": 2,
    "screen_time_limit_s": 5.0,
    "screen_max_rows": 2000,
}


def unique_pair() -> str:
    return session_pair("D")


def continued(candles: list[Candle], price: float) -> list[Candle]:
    """`candles` rescaled so the first opens at `price`: the regime changes, the price does not jump."""
    k = price / candles[0].open
    fields = ("open", "high", "low", "close", "vwap")
    return [c.model_copy(update={f: getattr(c, f) * k for f in fields}) for c in candles]


async def store(settings, candles: list[Candle], predictions: list[Prediction] = ()) -> None:
    engine = async_engine(settings.postgres)
    try:
        await upsert_candles(engine, candles)
        if predictions:
            await upsert_predictions(engine, list(predictions))
    finally:
        await engine.dispose()


def losing_predictions(candles: list[Candle], name: str, version: str) -> list[Prediction]:
    """The champion's forecasts in the shifted regime, 2% above the last price: worse than persistence."""
    return [
        Prediction(
            pair=c.pair,
            interval_s=60,
            horizon_s=60,
            made_at=c.window_end,
            feature_time=c.window_start,
            target_time=c.window_end + timedelta(seconds=60),
            last_price=c.close,
            predicted_price=c.close * 1.02,
            model_name=name,
            model_version=version,
        )
        for c in candles[:-1]
    ]


async def executions(client, workflow_id: str) -> list:
    """Every execution of `workflow_id` (visibility is eventually consistent: wait until it settles)."""
    found: list = []
    for _ in range(40):
        found = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        if found:
            await asyncio.sleep(1.0)
            again = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            if len(again) == len(found):
                return again
        await asyncio.sleep(0.5)
    return found


async def training_input(client, workflow_id: str) -> TrainingInput:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [request] = await client.data_converter.decode(started.input.payloads, [TrainingInput])
    return request


async def test_a_drift_breach_on_a_shifted_replay_starts_exactly_one_training_workflow(settings):
    pair = unique_pair()
    name = registered_model_name(pair, 60, 1)
    training_id = training_workflow_id(pair, 60, 1)
    migrate(settings.postgres)
    calm = synthetic_candles(pair, 60, CALM, T0, seed=11, ar=-0.4, gap_every=97)
    await store(settings, calm)

    client = await temporal_client(settings)
    task_queue = f"drift-test-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            # The champion: a real retrain on the calm regime (under an id of its own, so the target's
            # id has no run yet), promoted because the mean reversion is learnable.
            trained = await client.execute_workflow(
                "TrainingWorkflow",
                TrainingInput(pair=pair, interval_s=60, reason="test champion", **{**BUDGET, "folds": 3}),
                id=f"drift-champion-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=TrainingResult,
            )
            assert trained.promoted, trained.reasons
            champion = trained.champion

            # The replay moves on into another regime, where the champion's live forecasts are poor.
            shifted = continued(
                synthetic_candles(
                    pair, 60, SHIFTED, T0 + timedelta(minutes=CALM), seed=12, volatility=0.01, gap_every=97
                ),
                calm[-1].close,
            )
            real = [c for c in shifted if not c.gap]
            await store(settings, shifted, losing_predictions(real, name, champion.version))

            request = DriftMonitorInput(
                pair=pair,
                interval_s=60,
                horizon_candles=1,
                recent_window_s=RECENT_S,
                min_outcomes=100,
                training=BUDGET,
            )
            # Two checks at once (the schedule and a person, say): both see the breach.
            first, second = await asyncio.gather(
                check_drift(settings, request, client=client, task_queue=task_queue),
                check_drift(settings, request, client=client, task_queue=task_queue),
            )
            assert isinstance(first, DriftReport) and isinstance(second, DriftReport)
            reports = [first, second]
            outcomes = sorted(r.retrain.action for r in reports if r.retrain is not None)
            assert outcomes[0] in ("attached", "skipped") and outcomes[1] == "started", outcomes
            started = next(r for r in reports if r.retrain is not None and r.retrain.action == "started")
            assert started.retrain is not None and started.retrain.workflow_id == training_id

            # The retrain runs to its end with the breach as its reason; a check after it is inside
            # the cooldown and starts nothing.
            retrained = await client.get_workflow_handle(training_id, result_type=TrainingResult).result()
            assert retrained.dataset.rows > 1000
            third = await check_drift(settings, request, client=client, task_queue=task_queue)
            assert third is not None and third.breached
            assert third.retrain is not None and third.retrain.action == "skipped", third.retrain

    # What the report says: the champion's training window against the shifted recent window.
    assert started.target.model_version == champion.version and started.target.model_kind != "persistence"
    assert started.reference.source == "training"
    assert started.reference.start == trained.dataset.start and started.reference.end == trained.dataset.end
    assert started.recent.rows > 400 and started.reference.rows > 1000
    breached = {f.feature for f in started.features if f.breached}
    assert {"ret_lag_1", "atr_14_rel"} <= breached, started.table()
    assert started.live is not None and started.live.breached and started.live.n >= 100
    assert any(b.startswith("live skill vs persistence") for b in started.breaches)

    # Exactly one TrainingWorkflow of the target, started by the drift monitor, saying why.
    runs = await executions(client, training_id)
    assert len(runs) == 1, [(r.id, r.run_id) for r in runs]
    assert runs[0].run_id == started.retrain.run_id
    request_seen = await training_input(client, training_id)
    assert request_seen.reason == started.retrain_reason()
    assert request_seen.reason.startswith("drift: ") and "PSI" in request_seen.reason
    assert any(feature in request_seen.reason for feature in breached)
    assert request_seen.trials == BUDGET["trials"] and request_seen.lags == BUDGET["lags"]
    memo = await (await client.get_workflow_handle(training_id).describe()).memo()
    assert memo["reason"] == request_seen.reason and memo["triggered_by"].startswith(
        drift_workflow_id(pair, 60, 1)
    )

    # Recorded: every check is a row of drift_reports and a record on the topic.
    engine = sync_engine(settings.postgres)
    try:
        rows = read_drift_reports(engine, pair, 60)
    finally:
        engine.dispose()
    assert len(rows) == 3 and rows["breached"].all()
    assert sorted(rows["retrain_action"]) == sorted([*outcomes, "skipped"])
    assert set(rows["retrain_workflow_id"]) == {training_id}
    assert rows["max_psi"].min() > 1.0 and all(len(r) > 0 for r in rows["reasons"])
    records = [
        DriftRecord.model_validate_json(v)
        for v in await read_topic(settings.kafka, topic_name(DRIFT_REPORTS, settings.kafka.topic_prefix))
    ]
    assert len([r for r in records if r.pair == pair]) == 3


async def test_an_unchanged_random_walk_starts_nothing(settings):
    pair = unique_pair()
    migrate(settings.postgres)
    await store(settings, synthetic_candles(pair, 60, CALM + SHIFTED, T0, seed=21, gap_every=97))
    client = await temporal_client(settings)
    task_queue = f"drift-calm-{uuid.uuid4()}"
    request = DriftMonitorInput(pair=pair, interval_s=60, horizon_candles=1, recent_window_s=RECENT_S)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            report = await check_drift(settings, request, client=client, task_queue=task_queue)
    assert report is not None
    assert not report.breached and report.retrain is None, report.table()
    # No champion yet: the reference is the window of the same length before the recent one.
    assert report.target.model_version is None and report.reference.source == "preceding"
    assert report.reference.rows > 400 and report.recent.rows > 400
    assert all(f.psi is not None for f in report.features) and len(report.features) > 20
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(training_workflow_id(pair, 60, 1)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    engine = sync_engine(settings.postgres)
    try:
        rows = read_drift_reports(engine, pair, 60)
    finally:
        engine.dispose()
    assert len(rows) == 1 and not rows["breached"].iloc[0] and rows["retrain_action"].iloc[0] is None
