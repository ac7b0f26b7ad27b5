"""`cryptopredict backup` and `cryptopredict restore` on the running stack, restored beside it: the three
PostgreSQL databases into new names on the same server, Temporal's SQLite file into a second dev server
(the launcher's binary, on free ports) that is stopped afterwards. Markers made before the backup (a
dead letter, a registered model, an Optuna study, a running workflow) are found in the restored copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow import MlflowClient
from temporalio.client import Client, WorkflowExecutionStatus

from cryptopredict import workflow_types
from cryptopredict.cli import main
from cryptopredict.models import DeadLetter
from cryptopredict.models.retention import RetentionInput
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import Settings, get_settings
from cryptopredict.stack.backup import MANIFEST, TEMPORAL_FILE
from cryptopredict.stack.temporal import temporal_binary
from cryptopredict.store.candles import async_engine, insert_dead_letters
from cryptopredict.store.migrate import migrate

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(settings: Settings, database: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(settings.postgres.url_for(database)) as connection:
        return connection.execute(sql, params).fetchall()  # type: ignore[arg-type]


def tables(settings: Settings, database: str) -> set[str]:
    rows = query(settings, database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name for (name,) in rows}


@contextlib.contextmanager
def dev_server(db_file: Path) -> Iterator[str]:
    """A second Temporal dev server on `db_file` and free ports; its address."""
    port = free_port()
    args = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    args += ["--http-port", str(free_port()), "--metrics-port", str(free_port()), "--headless"]
    args += ["--db-filename", str(db_file), "--log-level", "error"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def connect(address: str, timeout_s: float = 30.0) -> Client:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_a_backup_restores_beside_the_running_stack(tmp_path: Path):
    settings = get_settings()
    pg = settings.postgres
    run = uuid.uuid4().hex[:8]
    marker = f"backup-test-{run}"
    restored_names = {
        name: f"{name}_restore_{run}" for name in (pg.database, pg.mlflow_database, pg.optuna_database)
    }

    migrate(pg)
    engine = async_engine(pg)
    try:
        await insert_dead_letters(
            engine, [DeadLetter(source=marker, reason="backup test", raw="x", at=datetime.now(UTC))]
        )
    finally:
        await engine.dispose()
    mlflow = MlflowClient(settings.mlflow.tracking_uri)
    mlflow.create_registered_model(marker)
    optuna.create_study(study_name=marker, storage=pg.optuna_storage_url)
    client = await temporal_client(settings)
    workflow = await client.start_workflow(
        workflow_types.RETENTION,
        RetentionInput(),
        id=marker,
        task_queue=f"backup-test-idle-{run}",  # no worker: it stays running, pruning nothing
        execution_timeout=timedelta(minutes=5),
    )
    backup_dir, restored_db = tmp_path / "backup", tmp_path / "restored" / "temporal.db"
    try:
        assert main(["backup", str(backup_dir)]) == 0
        assert (backup_dir / MANIFEST).is_file() and (backup_dir / TEMPORAL_FILE).is_file()
        # A second backup never overwrites the first; restoring into the live names is refused.
        assert main(["backup", str(backup_dir)]) == 2
        assert main(["restore", str(backup_dir), "--only", "store"]) == 2

        targets = [arg for name, new in restored_names.items() for arg in ("--target", f"{name}={new}")]
        assert main(["restore", str(backup_dir), *targets, "--temporal-db", str(restored_db)]) == 0

        restored_store = restored_names[pg.database]
        assert tables(settings, restored_store) == tables(settings, pg.database)
        assert query(
            settings, restored_store, "SELECT reason FROM dead_letters WHERE source = %s", marker
        ) == [("backup test",)]
        assert query(settings, restored_store, "SELECT version_num FROM alembic_version") == query(
            settings, pg.database, "SELECT version_num FROM alembic_version"
        )
        restored_mlflow = restored_names[pg.mlflow_database]
        assert query(settings, restored_mlflow, "SELECT name FROM registered_models WHERE name = %s", marker)
        restored_optuna = restored_names[pg.optuna_database]
        assert query(
            settings, restored_optuna, "SELECT study_name FROM studies WHERE study_name = %s", marker
        )

        with dev_server(restored_db) as address:
            second = await connect(address)
            description = await second.get_workflow_handle(marker).describe()
            assert description.run_id == workflow.result_run_id
            assert description.status == WorkflowExecutionStatus.RUNNING
    finally:
        await workflow.terminate("backup test")
        with psycopg.connect(pg.url_for("postgres"), autocommit=True) as connection:
            for new in restored_names.values():
                connection.execute(f'DROP DATABASE IF EXISTS "{new}" WITH (FORCE)')
        query(settings, pg.database, "DELETE FROM dead_letters WHERE source = %s RETURNING id", marker)
        mlflow.delete_registered_model(marker)
        optuna.delete_study(study_name=marker, storage=pg.optuna_storage_url)
