"""TrainingWorkflow on the real Temporal server, reading the real feature store, registering in the
real MLflow: the champion is loadable by alias and the workflow history is visible on the server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import random
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import mlflow
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from cryptopredict.features.candles import gap_candle
from cryptopredict.models import Candle
from cryptopredict.models.training import TrainingInput, TrainingResult
from cryptopredict.orchestration import start_training, temporal_client
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import training_workflow_id
from workflows.worker import build_worker

pytestmark = pytest.mark.integration

PAIR = "TST/USD"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def random_walk_candles(n: int, seed: int = 3) -> list[Candle]:
    rng = random.Random(seed)
    price, rows = 100.0, []
    for i in range(n):
        start = T0 + timedelta(minutes=i)
        if i % 97 == 50:  # a few gap windows, which the dataset must drop
            rows.append(gap_candle(PAIR, 60, start, price))
            continue
        close = price * math.exp(rng.gauss(0, 0.002))
        rows.append(
            Candle(
                pair=PAIR,
                interval_s=60,
                window_start=start,
                window_end=start + timedelta(minutes=1),
                open=price,
                high=max(price, close) * 1.001,
                low=min(price, close) * 0.999,
                close=close,
                volume=1.0,
                vwap=(price + close) / 2,
                trade_count=5,
            )
        )
        price = close
    return rows


@pytest.fixture(scope="module")
async def seeded_candles(settings):
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    rows = random_walk_candles(400)
    await upsert_candles(engine, rows)
    await upsert_candles(engine, rows)  # idempotent: a replay does not duplicate
    await engine.dispose()
    return rows


async def test_training_workflow_sets_a_loadable_champion(settings, seeded_candles):
    client = await temporal_client(settings)
    task_queue = f"training-test-{uuid.uuid4()}"
    request = TrainingInput(pair=PAIR, interval_s=60, lags=5, test_fraction=0.2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            result = await start_training(settings, request, client=client, task_queue=task_queue)
    assert isinstance(result, TrainingResult)
    assert result.dataset.rows > 300 and result.dataset.dropped > 0
    assert {ref.flavor for ref in result.registered} == {"persistence", "xgboost"}
    maes = {kind: m["mae"] for kind, m in result.metrics.items()}
    best = min(maes, key=lambda k: (maes[k], k != "persistence"))
    assert result.champion.flavor == best and result.champion.alias == "champion"

    # The champion is served from MLflow by alias.
    mlflow_client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    version = mlflow_client.get_model_version_by_alias(result.champion.name, "champion")
    assert str(version.version) == result.champion.version
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    model = await asyncio.to_thread(mlflow.pyfunc.load_model, f"models:/{result.champion.name}@champion")
    import pandas as pd

    row = pd.DataFrame([{f"ret_lag_{k}": 0.001 for k in range(1, 6)}])
    assert len(model.predict(row)) == 1

    # The history is on the server, with every activity of the run.
    handle = client.get_workflow_handle(training_workflow_id(PAIR, 60))
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert sorted(scheduled) == [
        "build_training_dataset",
        "fit_candidate",
        "fit_candidate",
        "register_and_promote",
    ]


async def test_temporal_cli_starts_a_training_run(settings, seeded_candles):
    """What a person does: `temporal workflow start --type TrainingWorkflow ...`."""
    from cryptopredict.stack.temporal import temporal_binary

    client = await temporal_client(settings)
    task_queue = f"training-cli-{uuid.uuid4()}"
    workflow_id = f"training-cli-{uuid.uuid4()}"
    payload = json.dumps({"pair": PAIR, "interval_s": 60, "lags": 5})
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
                    "--address",
                    settings.temporal.address,
                    "--namespace",
                    settings.temporal.namespace,
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    result = await client.get_workflow_handle(workflow_id, result_type=TrainingResult).result()
    assert result.champion.alias == "champion"


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
        execution_timeout=timedelta(seconds=60),
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
    assert "only 0 usable rows" in str(failure.value.cause.cause)
