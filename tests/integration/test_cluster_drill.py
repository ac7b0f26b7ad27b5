"""The cluster drill: a replay through the cluster profile (3 Kafka nodes over SASL_SSL, Temporal behind
TLS with an API key) with 2 stream workers, the prediction path and 2 training workers on separate
`local_dir`s, while the broker leading `trades` partition 0 is killed -9 (back after 30 s), a stream
worker is killed -9, and the training worker running a tuning batch is killed -9.

Afterwards the store holds the candles, indicator rows and predictions of an uninterrupted run exactly
once, the retrain completes with its full Optuna budget, the history shows the retried batch, and none
of the run's secrets is in a log, a metric, the workflow history or the MLflow run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import optuna
import pytest
from temporalio.client import WorkflowExecutionStatus
from topic_prefixes import run_prefix

from cryptopredict import stack
from cryptopredict.drill import (
    Run,
    assert_same_as_uninterrupted,
    assert_store_holds_each_once,
    start_training_worker,
)
from cryptopredict.kafka_admin import admin_client
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.ml import pyfunc, registry
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.orchestration import start_training, temporal_client
from cryptopredict.settings import Settings
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.stack.base import StackPaths, live_pid
from cryptopredict.stack.kafka_cluster import KafkaNode
from cryptopredict.stack.profile import load_profile_settings, read_secrets
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import TRADES, registered_model_name, topic_name, training_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TAG = uuid.uuid4().hex[:4].upper()
PAIRS = [f"CA{TAG}/USD", f"CB{TAG}/USD"]
TRAIN_PAIR = f"CT{TAG}/USD"
START = datetime(2026, 9, 1, tzinfo=UTC)
OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Settings:
    settings = load_profile_settings("cluster")
    stack.up(settings, only=["kafka", "temporal-tls", "mlflow"])
    return settings


def all_command_lines() -> str:
    """Every process's command line, as `ps` shows them to any local user."""
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # the process ended meanwhile
                continue
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(port: int, timeout_s: float = 30) -> str:
    """The surviving stream worker's /metrics (its supervisor may be restarting it a moment)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)


def secrets_env(settings: Settings) -> dict[str, str]:
    """What a worker on another host gets from its environment: the profile and its secrets."""
    return {"CRYPTOPREDICT_PROFILE": "cluster", **read_secrets(settings.local_dir)}


async def leader_of(settings: Settings, topic: str, partition: int) -> int:
    async with admin_client(settings.kafka) as admin:
        (description,) = await admin.describe_topics([topic])
    (found,) = [p for p in description["partitions"] if p["partition"] == partition]
    return int(found["leader"])


def node_pid(settings: Settings, node_id: int) -> int:
    node = KafkaNode(settings, StackPaths.from_settings(settings), node_id)
    pid = live_pid(node)
    assert pid is not None, f"{node.name} is not running"
    return pid


async def kill_the_worker_tuning(handle, workers: dict[int, subprocess.Popen], timeout_s: float = 300) -> int:
    """Waits until a tuning batch runs on one of `workers`, kills that worker -9; returns its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            pytest.fail(f"the retrain ended ({description.status}) before a tuning batch could be killed")
        for pending in description.raw_description.pending_activities:
            identity = pending.last_worker_identity
            pid = int(identity.split("@")[0]) if "@" in identity else None
            if pending.activity_type.name == "tune_trials" and pid in workers and pending.attempt == 1:
                if pending.HasField("last_started_time"):
                    os.killpg(workers[pid].pid, signal.SIGKILL)
                    workers[pid].wait()
                    return pid
        await asyncio.sleep(0.5)
    pytest.fail("no tuning batch started on the training workers")


async def test_the_cluster_survives_a_broker_a_stream_worker_and_a_training_worker_killed(
    cluster: Settings, tmp_path: Path
):
    settings = cluster
    env = secrets_env(settings) | {
        "CRYPTOPREDICT_KRAKEN__PAIRS": json.dumps(PAIRS),
        "CRYPTOPREDICT_FEATURES__CANDLE_INTERVALS_S": "[60, 300]",
    }
    known_secrets = [
        v for k, v in read_secrets(settings.local_dir).items() if k.endswith(("PASSWORD", "API_KEY"))
    ]
    assert known_secrets

    # The prediction path: a persistence champion per pair, as a first retrain registers.
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-cluster-drill")
    client_ml = mlflow.MlflowClient()
    for pair in PAIRS:
        registry.ensure_persistence_champion(
            client_ml,
            registered_model_name(pair, 60, 1),
            lambda: pyfunc.log_persistence("persistence-drill", 60, 1),
        )
    # The retrain's history in the store.
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    await upsert_candles(engine, synthetic_candles(TRAIN_PAIR, 60, 1500, START, seed=9, ar=0.0, gap_every=97))

    trades = synthetic_market(PAIRS, START, minutes=40, seed=31)
    first, second = len(trades) // 3, len(trades) * 2 // 3
    task_queue = f"training-drill-{uuid.uuid4()}"
    worker_log = (tmp_path / "training.log").open("wb")
    training_workers = [
        start_training_worker(task_queue, worker_log, env, tmp_path / f"worker-{n}") for n in (1, 2)
    ]
    client = await temporal_client(settings)
    request = TrainingInput(
        pair=TRAIN_PAIR,
        interval_s=60,
        lags=5,
        folds=2,
        # Two batches of 12 trials: each runs for seconds, long enough to be caught running.
        trials=24,
        tuning_batches=2,
        screen_time_limit_s=3.0,
        screen_max_rows=1000,
        heartbeat_timeout_s=5.0,
    )
    try:
        async with Run(settings, tmp_path, run_prefix("drill"), env=env) as run:
            metrics_ports = [free_port(), free_port()]
            stream_workers = []
            for port in metrics_ports:  # two workers on one host: a metrics port each
                run.env["CRYPTOPREDICT_METRICS__STREAM_PORT"] = str(port)
                stream_workers.append(run.start_worker())
            await run.publish(trades[:first])
            await run.wait_until_working()

            await start_training(settings, request, wait=False, client=client, task_queue=task_queue)
            handle = client.get_workflow_handle(
                training_workflow_id(TRAIN_PAIR, 60, 1), result_type=TrainingResult
            )
            killer = asyncio.create_task(kill_the_worker_tuning(handle, {w.pid: w for w in training_workers}))

            leader = await leader_of(settings, topic_name(TRADES, run.prefix), 0)
            os.kill(node_pid(settings, leader), signal.SIGKILL)
            killed_at = time.monotonic()
            await run.publish(trades[first:second])
            os.killpg(stream_workers[1].pid, signal.SIGKILL)
            stream_workers[1].wait()
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
            await asyncio.to_thread(stack.up, settings, [f"kafka-{leader}"])
            await run.publish(trades[second:])

            # Records Faust drops at the end of a partition after a crash are found by the stream guard
            # within its 120 s allowance, and the restarted worker makes the windows then.
            await assert_same_as_uninterrupted(settings, run, trades, PAIRS, timeout_s=300)
            await assert_store_holds_each_once(settings, engine, trades, PAIRS)
            metrics_text = await scrape(metrics_ports[0])
            # Every process of the run and of the stack, brokers and relay included, as `ps` shows them.
            command_lines = await asyncio.to_thread(all_command_lines)
            assert "cryptopredict_" in metrics_text

            killed_pid = await asyncio.wait_for(killer, timeout=300)
            result = await asyncio.wait_for(handle.result(), timeout=600)
    finally:
        await engine.dispose()
        for worker in training_workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)

    # The retrain completed on the surviving worker with the whole budget in each family's study.
    assert isinstance(result, TrainingResult)
    storage = optuna.storages.RDBStorage(settings.postgres.optuna_storage_url)
    description = await handle.describe()
    for tuned in result.tuned:
        study = optuna.load_study(
            study_name=f"{handle.id}-{description.run_id}-{tuned.family}", storage=storage
        )
        assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == request.trials
    history = await handle.fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    retried = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "tune_trials"
    ]
    assert retried, "the killed worker's tuning batch was not retried"
    assert all(a.identity.split("@")[0] != str(killed_pid) for a in retried)

    # No secret anywhere a person or a tool reads.
    logs = [
        tmp_path / "faust.log",
        tmp_path / "training.log",
        *StackPaths.from_settings(settings).logs.glob("*.log"),
    ]
    run_data = client_ml.get_run(result.mlflow_run_id).data
    places = {
        "logs": "\n".join(p.read_text(errors="replace") for p in logs if p.exists()),
        "history": json.dumps(history.to_json_dict()),
        "mlflow params and tags": json.dumps([run_data.params, run_data.tags]),
        "metrics": metrics_text,
        "process command lines": command_lines,
    }
    for place, text in places.items():
        for secret in known_secrets:
            assert secret not in text, f"a secret is in the {place}"
    # The database password neither (MLflow's server gets its backend URL from the environment).
    assert f":{settings.postgres.password}@" not in command_lines
