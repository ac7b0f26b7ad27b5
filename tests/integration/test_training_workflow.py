"""TrainingWorkflow on the real Temporal server, reading the real feature store, tuning with Optuna on
the real PostgreSQL and registering in the real MLflow: every step, the gate on a random walk, a
promotion with its model event and a rollback, two workers without a shared disk tuning one study with
one of them killed mid-tuning, and the Temporal CLI."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import mlflow
import optuna
import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowFailureError
from topic_prefixes import session_pair

from cryptopredict.kafka_admin import ensure_topics, read_topic
from cryptopredict.ml import pyfunc, registry
from cryptopredict.models import ModelEvent
from cryptopredict.models.training import TrainingInput, TrainingProgress, TrainingResult
from cryptopredict.orchestration import start_training, temporal_client
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from cryptopredict.temporal_connect import cli_env
from cryptopredict.topics import MODEL_EVENTS, registered_model_name, topic_name, training_workflow_id
from workflows.worker import build_worker

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N_CANDLES = 1500


def quick(pair: str, **extra) -> TrainingInput:
    """Small budgets: the steps are the real ones, only fewer trials and shorter screens."""
    values = dict(
        pair=pair, interval_s=60, lags=5, folds=3, trials=4, screen_time_limit_s=5.0, screen_max_rows=2000
    )
    return TrainingInput(**(values | extra))


async def seed(settings, pair: str, ar: float, seed: int, n: int = N_CANDLES) -> None:
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    rows = synthetic_candles(pair, 60, n, T0, seed=seed, ar=ar, gap_every=97)
    await upsert_candles(engine, rows)
    await engine.dispose()


def unique_pair() -> str:
    return session_pair("T")


def scheduled_activities(history) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def retried_activities(history) -> list[str]:
    """Activities that ended on a later attempt: the started event records the attempt that ran last."""
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        names[e.activity_task_started_event_attributes.scheduled_event_id]
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]


async def test_on_a_random_walk_every_step_runs_and_persistence_stays_champion(settings):
    pair = unique_pair()
    # Enough history for the interval's volatility scale (ml.adaptive.MIN_HAR_ROWS before the folds).
    await seed(settings, pair, ar=0.0, seed=3, n=3_000)
    client = await temporal_client(settings)
    task_queue = f"training-test-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            # Two folds: the first validation block starts a third of the way in, after enough rows to fit
            # the interval's volatility scale on.
            result = await start_training(
                settings, quick(pair, folds=2), client=client, task_queue=task_queue
            )
            handle = client.get_workflow_handle(training_workflow_id(pair, 60, 1))
            progress = await handle.query("progress", result_type=TrainingProgress)
    assert isinstance(result, TrainingResult)
    assert progress.step == "done" and progress.figures["dataset_hash"] == result.dataset.content_hash

    # The dataset: gaps dropped and counted, candles + indicators (computed: no stream wrote them).
    assert result.dataset.rows > 1000 and result.dataset.dropped["window_touches_gap"] > 0
    assert result.dataset.indicator_source == "computed" and "rsi_14_unit" in result.dataset.features
    # Screening covered many regressors; both required families were tuned with every trial.
    assert len(result.screened) >= 5 and {t.family for t in result.tuned} >= {"xgboost", "linear"}
    assert all(t.trials == 4 for t in result.tuned)

    # The gate keeps persistence on a random walk, says why, and the challenger is kept as such.
    assert not result.promoted and result.reasons
    assert result.champion.flavor == "persistence" and result.champion.alias == "champion"
    mlflow_client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    name = registered_model_name(pair, 60, 1)
    challenger = mlflow_client.get_model_version_by_alias(name, registry.CHALLENGER)
    assert str(challenger.version) == result.challenger.version
    assert 0.0 <= result.metrics["interval_coverage"] <= 1.0

    # Everything is in the retrain's MLflow run: the dataset (served by the tracking server, so a worker
    # on another host reads it over HTTP) and its identity, test metrics, plots, a safe model.
    run = mlflow_client.get_run(result.mlflow_run_id)
    assert run.data.params["dataset_hash"] == result.dataset.content_hash
    assert result.dataset.uri == f"{run.info.artifact_uri}/dataset/{result.dataset.content_hash}.parquet"
    assert result.dataset.uri.startswith("mlflow-artifacts:/")
    assert (
        "test_skill_vs_persistence" in run.data.metrics
        and "test_dm_pvalue_vs_persistence" in run.data.metrics
    )
    plots = {a.path for a in mlflow_client.list_artifacts(result.mlflow_run_id, "plots")}
    assert plots == {
        "plots/predicted_vs_actual.png",
        "plots/residuals.png",
        "plots/feature_importance.png",
        "plots/rolling_skill.png",
        "plots/drift.png",
        "plots/coverage_by_regime.png",
    }

    line = result.decision_line()
    assert set(line) == {
        "promoted",
        "model_version",
        "skill_vs_persistence",
        "dm_pvalue",
        "interval_coverage",
        "coverage_by_regime",
        "interval_score_vs_constant",
        "reasons",
    }
    # The challenger's adaptive interval against the constant-width one, on the test window.
    assert set(line["coverage_by_regime"]) == {"calm", "mid", "wild"}
    assert all(0.5 < c < 1.0 for c in line["coverage_by_regime"].values()), line
    assert 0.5 < line["interval_score_vs_constant"] < 1.5
    assert {"test_interval_kupiec_pvalue", "test_interval_christoffersen_pvalue"} <= set(run.data.metrics)

    # The persistence champion serves an interval too: calibrated on the returns, scaled by volatility.
    spec = pyfunc.forecast_spec(pyfunc.load_forecast_model(result.champion.uri))
    assert spec.family == "persistence" and spec.coverage == 0.8
    assert spec.interval[0] < 0 < spec.interval[1] and spec.adaptive is not None

    history = await handle.fetch_history()
    assert scheduled_activities(history) == [
        "prepare_training_dataset",
        "ensure_champion",
        "screen_candidates",
        *(["tune_trials"] * 4 + ["tune_candidate"]) * len(result.tuned),  # 4 trial batches per family
        "evaluate_challenger",
        "register_challenger",
        "promote_or_keep",
    ]


async def test_a_learnable_series_is_promoted_announced_and_can_be_rolled_back(settings):
    pair = unique_pair()
    await seed(settings, pair, ar=-0.4, seed=4)  # strongly mean-reverting returns: a linear model learns it
    await ensure_topics(settings.kafka)
    client = await temporal_client(settings)
    task_queue = f"training-promote-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            result = await start_training(settings, quick(pair), client=client, task_queue=task_queue)
    assert result is not None
    assert result.promoted, result.reasons
    assert result.metrics["skill_vs_persistence"] > 0 and result.dm_pvalue < 0.05
    assert result.champion.version == result.challenger.version

    name = registered_model_name(pair, 60, 1)
    events = [
        ModelEvent.model_validate_json(v)
        for v in await read_topic(settings.kafka, topic_name(MODEL_EVENTS, settings.kafka.topic_prefix))
    ]
    mine = [e for e in events if e.registered_model == name]
    assert [(e.kind, e.champion.version) for e in mine] == [("promoted", result.challenger.version)]

    # A person rolls back: champion moves to the persistence version that held it before.
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cryptopredict.cli", "model", "rollback", "--pair", pair, "--interval", "1m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    mlflow_client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    champion = mlflow_client.get_model_version_by_alias(name, registry.CHAMPION)
    assert champion.tags["kind"] == "persistence"
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {
        "champion": str(champion.version),
        "previous": result.challenger.version,
    }
    again = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cryptopredict.cli", "model", "rollback", "--pair", pair, "--interval", "1m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "error:" in again.stderr  # nothing before the first champion


async def test_two_workers_without_a_shared_disk_tune_one_study_and_survive_a_kill(settings, tmp_path):
    """Two training workers, each with its own local_dir, run a family's trial batches at once; the one
    running a tuning step is killed -9, its batches are retried on the other, and every study ends with
    exactly the requested number of complete trials."""
    pair = unique_pair()
    await seed(settings, pair, ar=0.0, seed=5)
    client = await temporal_client(settings)
    task_queue = f"training-kill-{uuid.uuid4()}"
    request = quick(pair, trials=12, heartbeat_timeout_s=5.0)

    def start_worker(name: str) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "cryptopredict.cli",
            "worker",
            "--queues",
            "training",
            "--no-schedules",
        ]
        env = os.environ | {
            "CRYPTOPREDICT_LOCAL_DIR": str(tmp_path / name),
            "CRYPTOPREDICT_METRICS__WORKER_PORT": "-1",  # two workers on one host: no port to share
        }
        return subprocess.Popen(
            [*command, "--task-queue", task_queue],
            env=env,
            stdout=(tmp_path / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def logs() -> str:
        return "\n".join((tmp_path / f"{name}.log").read_text()[-2000:] for name in ("a", "b"))

    workers = [start_worker("a"), start_worker("b")]
    by_identity = {f"{worker.pid}@{socket.gethostname()}": worker for worker in workers}
    try:
        for _ in range(240):  # both poll before the batches are scheduled, so both get some
            if len(await pollers(client, settings, task_queue)) == 2:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"the workers never polled: {logs()}")
        await start_training(settings, request, wait=False, client=client, task_queue=task_queue)
        handle = client.get_workflow_handle(training_workflow_id(pair, 60, 1), result_type=TrainingResult)
        seen: set[str] = set()
        for _ in range(3000):  # until both workers have run trial batches and one runs one now
            pending = (await handle.describe()).raw_description.pending_activities
            tuning = {
                p.last_worker_identity
                for p in pending
                if p.activity_type.name == "tune_trials"
                and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            }
            seen |= tuning
            if seen >= set(by_identity) and tuning:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the trial batches never ran on both workers: {logs()}")
        victim = by_identity.pop(next(iter(tuning)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        result = await asyncio.wait_for(handle.result(), timeout=600)
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)
    assert isinstance(result, TrainingResult), logs()
    # Every family's study holds exactly the budget of complete trials: the killed batches resumed.
    storage = optuna.storages.RDBStorage(settings.postgres.optuna_storage_url)
    for tuned in result.tuned:
        study = optuna.load_study(study_name=tuned.study_name, storage=storage)
        assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == request.trials
        assert tuned.trials == request.trials
    storage.engine.dispose()
    history = await handle.fetch_history()
    assert "tune_trials" in retried_activities(history)
    # The survivor read the dataset from MLflow into its own local_dir.
    (survivor,) = by_identity.values()
    local_dir = tmp_path / ("a" if survivor is workers[0] else "b")
    assert (local_dir / "datasets" / f"{result.dataset.content_hash}.parquet").is_file()


async def pollers(client, settings, task_queue: str) -> set[str]:
    """Identities of the workers polling `task_queue` for activities."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.temporal.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return {poller.identity for poller in response.pollers}


async def test_temporal_cli_starts_a_training_run(settings):
    """What a person does: `temporal workflow start --type TrainingWorkflow ...` with a minimal input."""
    from cryptopredict.stack.temporal import temporal_binary

    pair = unique_pair()
    await seed(settings, pair, ar=0.0, seed=6)
    client = await temporal_client(settings)
    task_queue = f"training-cli-{uuid.uuid4()}"
    workflow_id = f"training-cli-{uuid.uuid4()}"
    payload = json.dumps({"pair": pair, "interval_s": 60, "trials": 2, "folds": 2, "screen_time_limit_s": 3})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            completed = await asyncio.to_thread(
                subprocess.run,
                [
                    str(temporal_binary()),
                    "workflow",
                    "execute",
                    "--type",
                    "TrainingWorkflow",
                    "--task-queue",
                    task_queue,
                    "--workflow-id",
                    workflow_id,
                    "--input",
                    payload,
                ],
                env={**os.environ, **cli_env(settings.temporal)},
                capture_output=True,
                text=True,
                timeout=600,
            )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    result = await client.get_workflow_handle(workflow_id, result_type=TrainingResult).result()
    assert result.champion.alias == "champion" and result.reasons


async def test_missing_data_fails_the_run_with_a_reason(settings):
    client = await temporal_client(settings)
    task_queue = f"training-empty-{uuid.uuid4()}"
    request = TrainingInput(pair="NONE/USD", interval_s=60, min_rows=100)
    handle = await client.start_workflow(
        "TrainingWorkflow",
        request,
        id=f"training-empty-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=TrainingResult,
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
    assert "only 0 usable rows" in str(failure.value.cause.cause)


async def test_the_retrain_schedule_is_created_once_per_target_and_updated_to_the_settings(settings):
    from cryptopredict.orchestration import ensure_training_schedules
    from cryptopredict.topics import training_schedule_id

    pair = unique_pair()
    mine = settings.model_copy(
        update={
            "kraken": settings.kraken.model_copy(update={"pairs": [pair]}),
            "model": settings.model.model_copy(update={"targets": ["price", "volatility"]}),
        }
    )
    client = await temporal_client(settings)
    horizon = settings.model.horizons_candles[0]
    schedule_id = training_schedule_id(pair, settings.features.interval_s, horizon)
    volatility_id = training_schedule_id(pair, settings.features.interval_s, horizon, target="volatility")
    try:
        # One schedule per target: the volatility retrain never collides with the price one.
        assert await ensure_training_schedules(mine, client) == [schedule_id, volatility_id]
        assert await ensure_training_schedules(mine, client) == []  # every worker start calls it
        description = await client.get_schedule_handle(schedule_id).describe()
        action = description.schedule.action
        assert action.workflow == "ScheduledRetrainWorkflow"
        interval = description.schedule.spec.intervals[0].every
        assert interval.total_seconds() == settings.model.retrain_every_s
        volatility = (await client.get_schedule_handle(volatility_id).describe()).schedule.action
        (request,) = await client.data_converter.decode(volatility.args, [TrainingInput])  # type: ignore[union-attr]
        assert request.target == "volatility" and request.pair == pair

        # A changed setting reaches the existing schedule at the next worker start; a pause stays.
        await client.get_schedule_handle(schedule_id).pause(note="paused by a person")
        slower = mine.model_copy(
            update={
                "model": mine.model.model_copy(update={"retrain_every_s": 3 * settings.model.retrain_every_s})
            }
        )
        assert await ensure_training_schedules(slower, client) == []
        updated = await client.get_schedule_handle(schedule_id).describe()
        assert updated.schedule.spec.intervals[0].every == 3 * interval
        assert updated.schedule.state.paused and updated.schedule.state.note == "paused by a person"
    finally:
        for created in (schedule_id, volatility_id):
            await client.get_schedule_handle(created).delete()


async def test_a_scheduled_retrain_runs_under_the_target_id_and_never_beside_another(settings):
    """Temporal appends the scheduled time to a scheduled run's id; the retrain itself must still run
    under the target's id, so that a retrain started by hand or by drift is not doubled."""
    from temporalio.client import WorkflowExecutionStatus

    from cryptopredict.orchestration import ensure_training_schedules
    from cryptopredict.topics import training_schedule_id

    pair = unique_pair()  # no candles: a retrain that starts fails at once for want of data
    task_queue = f"training-scheduled-{uuid.uuid4()}"
    mine = settings.model_copy(
        update={
            "kraken": settings.kraken.model_copy(update={"pairs": [pair]}),
            "temporal": settings.temporal.model_copy(update={"training_task_queue": task_queue}),
            "model": settings.model.model_copy(update={"targets": ["price"]}),
        }
    )
    horizon = settings.model.horizons_candles[0]
    target_id = training_workflow_id(pair, settings.features.interval_s, horizon)
    schedule_id = training_schedule_id(pair, settings.features.interval_s, horizon)
    client = await temporal_client(settings)
    await ensure_training_schedules(mine, client)
    schedule = client.get_schedule_handle(schedule_id)

    async def next_trigger_result(seen: int) -> str:
        await schedule.trigger()
        async with asyncio.timeout(60):
            while True:
                recent = (await schedule.describe()).info.recent_actions
                if len(recent) > seen:
                    action = recent[-1].action
                    break
                await asyncio.sleep(0.2)
        triggered = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id)
        assert action.workflow_id != target_id and action.workflow_id.startswith(schedule_id)
        return await triggered.result()

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
            async with build_worker(client, mine, executor, task_queue=task_queue):
                # A retrain of the target runs already (on a queue nobody serves, so it stays running).
                running = await client.start_workflow(
                    "TrainingWorkflow", quick(pair), id=target_id, task_queue=f"idle-{uuid.uuid4()}"
                )
                outcome = await next_trigger_result(0)
                assert outcome == f"skipped: {target_id} is running already"
                assert (await running.describe()).status == WorkflowExecutionStatus.RUNNING
                await running.terminate("test")

                # None runs: the schedule starts the retrain under the target's id, on the worker's queue.
                outcome = await next_trigger_result(1)
                assert outcome.startswith(f"started {target_id} (run ")
                started = client.get_workflow_handle(target_id)
                with pytest.raises(WorkflowFailureError):
                    await started.result()  # no data for the pair
                description = await started.describe()
                assert description.run_id != running.result_run_id
                assert description.task_queue == task_queue
    finally:
        await schedule.delete()


async def test_cryptopredict_train_prints_the_decision_as_its_last_line(settings):
    pair = unique_pair()
    await seed(settings, pair, ar=0.0, seed=7)
    client = await temporal_client(settings)
    task_queue = f"training-cmd-{uuid.uuid4()}"
    env = os.environ | {
        "CRYPTOPREDICT_TEMPORAL__TRAINING_TASK_QUEUE": task_queue,
        "CRYPTOPREDICT_MODEL__FOLDS": "2",
    }
    command = [sys.executable, "-m", "cryptopredict.cli", "train", "--pair", pair, "--interval", "1m"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            completed = await asyncio.to_thread(
                subprocess.run,
                [*command, "--trials", "2"],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
    assert completed.returncode == 0, completed.stderr
    decision = json.loads(completed.stdout.strip().splitlines()[-1])
    assert decision["promoted"] is False and decision["reasons"]
    assert 0.0 <= decision["interval_coverage"] <= 1.0 and 0.0 <= decision["dm_pvalue"] <= 1.0


async def test_a_volatility_retrain_has_its_own_model_naive_first_champion_and_decision(settings):
    """`target: volatility`: the naive trailing mean becomes the first champion of the `-vol` model, HAR
    and a tuned XGBoost are evaluated against it, and the decision reports skill and DM p-value."""
    pair = unique_pair()
    await seed(settings, pair, ar=0.0, seed=8)
    client = await temporal_client(settings)
    task_queue = f"training-vol-{uuid.uuid4()}"
    request = quick(pair, target="volatility", horizon_candles=5)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            result = await start_training(settings, request, client=client, task_queue=task_queue)
    assert isinstance(result, TrainingResult) and result.target == "volatility"
    name = registered_model_name(pair, 60, 5, target="volatility")
    assert name.endswith("-vol") and result.champion.name == result.challenger.name == name
    assert result.dataset.volatility_estimator == "mean_abs_log_return"  # 1-minute candles: their returns

    # The naive forecast was registered and promoted first, before any challenger.
    mlflow_client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    first = mlflow_client.get_model_version(name, "1")
    assert first.tags["kind"] == "naive" and registry.champion_history(mlflow_client, name)[0] == "1"
    # No price model of the target was touched.
    assert registry.current_champion(mlflow_client, registered_model_name(pair, 60, 5)) is None

    # HAR and the tuned XGBoost were both evaluated on the test window; the better by CV is the challenger.
    assert {t.family for t in result.tuned} == {"har", "xgboost"}
    assert {"vol_har_log_mae", "vol_xgboost_log_mae", "vol_naive_log_mae"} <= set(result.metrics)
    assert result.challenger.flavor == min(result.tuned, key=lambda t: t.cv_mae).family
    line = result.decision_line()
    assert line["target"] == "volatility" and line["estimator"] == "mean_abs_log_return"
    assert isinstance(line["vol_skill_vs_naive"], float) and 0.0 <= line["vol_dm_pvalue"] <= 1.0
    assert json.loads(json.dumps(line)) == line

    # The gate decided and the aliases say so: its own champion, the challenger kept if not promoted.
    champion = mlflow_client.get_model_version_by_alias(name, registry.CHAMPION)
    if result.promoted:
        assert str(champion.version) == result.challenger.version and result.dm_pvalue < request.dm_alpha
    else:
        assert champion.tags["kind"] == "naive" and result.reasons
        challenger = mlflow_client.get_model_version_by_alias(name, registry.CHALLENGER)
        assert str(challenger.version) == result.challenger.version
    model = pyfunc.load_forecast_model(f"models:/{name}@{registry.CHAMPION}")
    assert pyfunc.forecast_spec(model).target == "volatility"

    handle = client.get_workflow_handle(training_workflow_id(pair, 60, 5, target="volatility"))
    assert scheduled_activities(await handle.fetch_history()) == [
        "prepare_volatility_dataset",
        "ensure_volatility_champion",
        "screen_volatility",
        *(["tune_volatility_trials"] * 4),
        "tune_candidate",
        "evaluate_volatility",
        "register_challenger",
        "promote_or_keep",
    ]
