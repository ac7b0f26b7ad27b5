"""The RetentionWorkflow on the real stack, through Temporal with the project's worker on a queue of its
own: old predictions, dead letters, Optuna studies and MLflow versions of this test's own names go, the
champion, the previous champion, the challenger, a study of a running retrain and every young one stay,
and a rollback still works afterwards. The run is scoped to this test's objects (its pairs, dead-letter
source, model and study prefixes, topic prefix): nothing else on the stack is touched.

Ages cannot be set on MLflow versions or Optuna trials through their APIs, so the "old" ones are made
old in their databases directly, as time would.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import optuna
import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from mlflow import MlflowClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cryptopredict import workflow_types
from cryptopredict.kafka_admin import admin_client, delete_topics
from cryptopredict.ml import registry
from cryptopredict.models import DeadLetter, Prediction
from cryptopredict.models.retention import RetentionAges, RetentionInput, RetentionReport, RetentionScope
from cryptopredict.models.training import TrainingInput
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import get_settings
from cryptopredict.store.candles import async_engine, insert_dead_letters, sync_engine, upsert_predictions
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import LATE_TRADES, topic_name
from workflows.worker import build_worker

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)
AGES = RetentionAges(
    predictions_days=180,
    dead_letters_days=30,
    late_trades_days=3,
    optuna_studies_days=30,
    mlflow_versions_days=90,
)


def prediction(pair: str, target_time: datetime) -> Prediction:
    return Prediction(
        pair=pair,
        interval_s=60,
        horizon_s=60,
        made_at=target_time - timedelta(seconds=60),
        feature_time=target_time - timedelta(seconds=120),
        target_time=target_time,
        last_price=100.0,
        predicted_price=101.0,
        model_name="retention-test",
        model_version="1",
    )


def execute(url: str, statement: str, **params: object) -> list[tuple]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture
def mlflow_model(settings_run) -> Iterator[tuple[MlflowClient, str]]:
    """Versions 1-6 of a model of this test: 2, 4 and 5 promoted in turn (5 is champion, 4 the previous
    one), 3 the challenger; 1-5 created 400 days ago, 6 now."""
    settings, run = settings_run
    client = MlflowClient(settings.mlflow.tracking_uri)
    experiment = client.create_experiment(f"retention-test-{run}")
    mlflow_run = client.create_run(experiment)
    client.set_terminated(mlflow_run.info.run_id)
    name = f"retention-test-{run}-model"
    client.create_registered_model(name)
    try:
        for _ in range(6):
            client.create_model_version(
                name, source=f"{mlflow_run.info.artifact_uri}/model", run_id=mlflow_run.info.run_id
            )
        for version in ("2", "4", "5"):
            registry.promote(client, name, version, "retention test")
        registry.mark_challenger(client, name, "3", ["retention test"])
        execute(
            settings.postgres.mlflow_backend_uri,
            "UPDATE model_versions SET creation_time = :old WHERE name = :name AND version <= 5",
            old=int(OLD.timestamp() * 1000),
            name=name,
        )
        yield client, name
    finally:
        client.delete_registered_model(name)
        client.delete_experiment(experiment)


@pytest.fixture
def settings_run():
    settings = get_settings()
    run = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"retention-test-{run}."})}
    )
    return settings, run


def make_study(url: str, name: str, running_trial: bool = False) -> None:
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
        if running_trial:
            study.ask()  # left RUNNING, as by a worker mid-trial
    finally:
        storage.engine.dispose()


def study_names(url: str, prefix: str) -> set[str]:
    rows = execute(url, "SELECT study_name FROM studies WHERE study_name LIKE :p", p=f"{prefix}%")
    return {name for (name,) in rows}


async def test_retention_prunes_exactly_the_old_objects_of_its_scope(settings_run, mlflow_model):
    settings, run = settings_run
    client_mlflow, model_name = mlflow_model
    migrate(settings.postgres)
    pair, other_pair = f"RT{run.upper()}/USD", f"RU{run.upper()}/USD"
    source = f"retention-test-{run}"

    # Feature store rows: old and young of the test's pair, and an old one of a pair outside the scope.
    engine = async_engine(settings.postgres)
    try:
        await upsert_predictions(
            engine, [prediction(pair, OLD), prediction(pair, NOW), prediction(other_pair, OLD)]
        )
        letters = [
            DeadLetter(source=source, reason="old", raw="x", at=OLD),
            DeadLetter(source=source, reason="young", raw="x", at=NOW),
        ]
        await insert_dead_letters(engine, letters)
    finally:
        await engine.dispose()

    # Optuna: an old finished study, a young one, an old one with a RUNNING trial and an old one whose
    # retrain is still running (a TrainingWorkflow on a queue no worker polls).
    client = await temporal_client(settings)
    idle = await client.start_workflow(
        workflow_types.TRAINING,
        TrainingInput(pair=pair, reason="retention test"),
        id=f"retention-test-{run}-training",
        task_queue=f"retention-test-idle-{run}",
        execution_timeout=timedelta(minutes=5),
    )
    url = settings.postgres.optuna_storage_url
    prefix = f"retention-test-{run}-"
    running_study = f"{prefix}{idle.result_run_id}-linear"
    for name in (f"{prefix}old", f"{prefix}young", running_study):
        make_study(url, name)
    make_study(url, f"{prefix}busy", running_trial=True)
    execute(
        url,
        "UPDATE trials SET datetime_start = :old, datetime_complete = :old FROM studies s "
        "WHERE trials.study_id = s.study_id AND s.study_name = ANY(:names)",
        old=OLD.replace(tzinfo=None),
        names=[f"{prefix}old", f"{prefix}busy", running_study],
    )

    topic = topic_name(LATE_TRADES, settings.kafka.topic_prefix)
    async with admin_client(settings.kafka) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    task_queue = f"retention-test-{run}"
    request = RetentionInput(
        ages=AGES,
        scope=RetentionScope(
            pairs=[pair],
            dead_letter_sources=[source],
            model_prefix=f"retention-test-{run}-",
            study_prefix=prefix,
        ),
        batch_rows=1,  # one row per statement: the batching loop runs
    )
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
            async with build_worker(client, settings, executor, task_queue=task_queue):
                report = await client.execute_workflow(
                    workflow_types.RETENTION,
                    request,
                    id=f"retention-test-{run}",
                    task_queue=task_queue,
                    execution_timeout=timedelta(minutes=3),
                    result_type=RetentionReport,
                )
        async with admin_client(settings.kafka) as admin:
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        remaining_studies = study_names(url, prefix)
    finally:
        await idle.terminate("retention test")
        await delete_topics(settings.kafka, [topic])
        for name in study_names(url, prefix):
            optuna.delete_study(study_name=name, storage=url)

    assert report.count("predictions").deleted == 1
    assert report.count("dead_letters").deleted == 1
    assert report.count("optuna_studies").deleted == 1 and report.count("optuna_studies").kept == 2
    assert report.count("mlflow_versions").deleted == 2 and report.count("mlflow_versions").kept == 3

    store = sync_engine(settings.postgres)
    try:
        with store.connect() as connection:
            kept = connection.execute(
                text("SELECT pair, target_time FROM predictions WHERE pair = ANY(:p)"),
                {"p": [pair, other_pair]},
            ).all()
            reasons = connection.execute(
                text("SELECT reason FROM dead_letters WHERE source = :s"), {"s": source}
            ).all()
            connection.execute(
                text("DELETE FROM predictions WHERE pair = ANY(:p)"), {"p": [pair, other_pair]}
            )
            connection.execute(text("DELETE FROM dead_letters WHERE source = :s"), {"s": source})
            connection.commit()
    finally:
        store.dispose()
    assert sorted((p, t > OLD) for p, t in kept) == [(pair, True), (other_pair, False)]
    assert [r for (r,) in reasons] == ["young"]

    assert remaining_studies == {f"{prefix}young", f"{prefix}busy", running_study}

    versions = {v.version for v in client_mlflow.search_model_versions(f"name = '{model_name}'")}
    assert versions == {"3", "4", "5", "6"}
    assert registry.champion_history(client_mlflow, model_name) == ["4", "5"]
    assert registry.rollback(client_mlflow, model_name) == ("5", "4")

    configs = {e[0]: e[1] for response in described for *_, entries in response.resources for e in entries}
    assert configs["retention.ms"] == str(3 * 86_400_000)
