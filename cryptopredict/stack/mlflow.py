"""MLflow tracking server and model registry, backed by the local Postgres."""

from __future__ import annotations

import logging
import sys

from cryptopredict.stack.base import Component, url_host_port

logger = logging.getLogger(__name__)


class Mlflow(Component):
    name = "mlflow"
    requires = ("postgres",)
    # The first start migrates an empty database, which takes a while on two cores.
    startup_timeout_s = 180.0

    @property
    def host_port(self) -> tuple[str, int]:
        return url_host_port(self.settings.mlflow.tracking_uri, 5000)

    @property
    def host(self) -> str:
        return self.host_port[0]

    @property
    def endpoint(self) -> str:
        return self.settings.mlflow.tracking_uri

    @property
    def artifacts(self) -> str:
        return str(self.data_dir / "artifacts")

    def prepare(self) -> None:
        (self.data_dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def start_cmd(self) -> list[str]:
        host, port = self.host_port
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--artifacts-destination",
            self.artifacts,
            "--host",
            host,
            "--port",
            str(port),
            # The defaults start ~15 processes and ~2 GB (see ARCHITECTURE pitfalls).
            "--workers",
            "1",
        ]

    def start_env(self) -> dict[str, str]:
        # The backend URI holds the database password: an environment variable, not the command line
        # (which every local user can read).
        return {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_BACKEND_STORE_URI": self.settings.postgres.mlflow_backend_uri,
        }

    def cmdline_marker(self) -> str:
        return self.artifacts

    async def health(self) -> str:
        import httpx

        base = self.settings.mlflow.tracking_uri.rstrip("/")
        async with httpx.AsyncClient(timeout=4) as http:
            (await http.get(f"{base}/health")).raise_for_status()
            response = await http.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1})
            response.raise_for_status()
            version = await http.get(f"{base}/version")
        return f"MLflow {version.text.strip()}" if version.is_success else "MLflow"
