"""The Temporal TLS endpoint of the local cluster profile: infra/temporal-relay (Go) on `temporal.address`,
in front of the dev server the Temporal component starts on `temporal.relay_upstream`.

It checks what a production cluster or Temporal Cloud checks: TLS with a client certificate of the
cluster CA, and `authorization: Bearer <temporal.api_key>` on every call. Its certificate is the cluster
CA's `temporal-relay` leaf (stack/profile.py); the API key reaches it in a 0600 file, never on its command
line.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptopredict.settings import Settings, TemporalSettings
from cryptopredict.stack.base import Component, StackError, split_host_port
from cryptopredict.stack.certs import CertFiles
from cryptopredict.stack.profile import TEMPORAL_RELAY_CERT, cluster_ca
from cryptopredict.stack.tools import install_go_tools


class TemporalRelay(Component):
    name = "temporal-tls"
    requires = ("temporal",)
    startup_timeout_s = 30.0

    @classmethod
    def enabled_for(cls, settings: Settings) -> bool:
        return settings.temporal.relay_upstream is not None

    @property
    def temporal(self) -> TemporalSettings:
        return self.settings.temporal

    @property
    def host(self) -> str:
        return split_host_port(self.temporal.address)[0]

    @property
    def endpoint(self) -> str:
        return f"{self.temporal.address} (TLS + API key, relaying to {self.temporal.relay_upstream})"

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "api-key"

    @property
    def binary(self) -> Path:
        return self.paths.bin / "temporal-relay"

    def server_cert(self) -> CertFiles:
        return cluster_ca(self.paths.root).leaf(TEMPORAL_RELAY_CERT)

    def install(self) -> None:
        install_go_tools(self.paths.bin, ["temporal-relay"])

    def prepare(self) -> None:
        if self.temporal.relay_upstream is None:
            raise StackError(f"{self.name}: temporal.relay_upstream is not set")
        if self.temporal.api_key is None:
            raise StackError(
                f"{self.name}: temporal.api_key is not set (the cluster profile's secrets.env sets it)"
            )
        self.server_cert()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        draft = self.api_key_file.with_name(f".api-key.{os.getpid()}")
        draft.unlink(missing_ok=True)
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.temporal.api_key.get_secret_value())
        draft.replace(self.api_key_file)

    def start_cmd(self) -> list[str]:
        server = self.server_cert()
        return [
            str(self.binary),
            "-listen",
            self.temporal.address,
            "-upstream",
            str(self.temporal.relay_upstream),
            "-tls-cert",
            str(server.cert),
            "-tls-key",
            str(server.key),
            "-client-ca",
            str(cluster_ca(self.paths.root).cert_file),
            "-api-key-file",
            str(self.api_key_file),
        ]

    def cmdline_marker(self) -> str:
        return str(self.api_key_file)

    async def health(self) -> str:
        """A real call through the relay, as every client makes it: TLS, client certificate, API key."""
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

        from cryptopredict.temporal_connect import connect_temporal

        client = await connect_temporal(self.temporal)
        response = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.temporal.namespace)
        )
        return f"namespace {response.namespace_info.name} over TLS"
