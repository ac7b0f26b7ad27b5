"""Temporal over TLS with a client certificate and an API key, as against a production cluster or Temporal
Cloud: the launcher's relay (infra/temporal-relay, component `temporal-tls`) in front of the running
stack's dev server, started for settings with `temporal.relay_upstream` set.

The right certificate and key get everything a client and a worker need; no client certificate, one of
another CA, a server certificate we do not trust, or a wrong or missing key each fail at connect, at
once, with a line naming the endpoint and the reason, and never the key.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from cryptopredict import stack
from cryptopredict.cli.demo import free_port
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import Settings, TemporalSettings
from cryptopredict.stack.base import StackPaths
from cryptopredict.stack.certs import LocalCA
from cryptopredict.stack.profile import cluster_ca
from cryptopredict.stack.temporal import temporal_binary
from cryptopredict.temporal_connect import TemporalConnectError, cli_env, connect_temporal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

API_KEY = f"relay-key-{uuid.uuid4().hex}"
# A refused connection is reported at once; this bounds "at once" with room for a loaded machine.
FAST_S = 5.0


@activity.defn
async def shout(text: str) -> str:
    return text.upper() + "!"


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(shout, text, start_to_close_timeout=timedelta(seconds=10))


@pytest.fixture(scope="module")
def relayed(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose `temporal.address` is the relay, started by the launcher on a local_dir of its own
    (so its certificates, key file, pid file and log are this test's), relaying to the stack's server."""
    local_dir = tmp_path_factory.mktemp("temporal-tls")
    client = cluster_ca(local_dir).leaf("test-client", client=True)
    temporal = settings.temporal.model_copy(
        update={
            "address": f"127.0.0.1:{free_port()}",
            "relay_upstream": settings.temporal.address,
            "tls_ca_file": cluster_ca(local_dir).cert_file,
            "tls_cert_file": client.cert,
            "tls_key_file": client.key,
            "tls_server_name": "localhost",
            "api_key": SecretStr(API_KEY),
        }
    )
    relay_settings = settings.model_copy(update={"temporal": temporal, "local_dir": local_dir})
    statuses = {s.name: s for s in stack.up(relay_settings, only=["temporal-tls"])}
    assert statuses["temporal-tls"].managed and statuses["temporal-tls"].healthy, statuses
    try:
        yield relay_settings
    finally:
        stack.down(relay_settings, only=["temporal-tls"])


def variant(settings: Settings, **changes: object) -> TemporalSettings:
    return settings.temporal.model_copy(update=changes)


async def refused(temporal: TemporalSettings) -> TemporalConnectError:
    started = time.monotonic()
    with pytest.raises(TemporalConnectError) as caught:
        await connect_temporal(temporal)
    assert time.monotonic() - started < FAST_S
    message = str(caught.value)
    assert message.startswith(f"cannot connect to Temporal at {temporal.address} (TLS"), message
    assert API_KEY not in message and "wrong-key" not in message
    assert "\n" not in message
    return caught.value


async def test_a_client_and_a_worker_with_the_right_certificate_and_key(relayed: Settings) -> None:
    client = await temporal_client(relayed)
    response = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=relayed.temporal.namespace)
    )
    assert response.namespace_info.name == relayed.temporal.namespace

    task_queue = f"tls-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ShoutWorkflow],
        activities=[shout],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await client.execute_workflow(
            ShoutWorkflow.run,
            "hello",
            id=f"tls-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert result == "HELLO!"


def test_the_temporal_cli_connects_through_the_relay(relayed: Settings) -> None:
    completed = subprocess.run(
        [str(temporal_binary()), "operator", "namespace", "describe", "-n", relayed.temporal.namespace],
        env={**os.environ, **cli_env(relayed.temporal)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert relayed.temporal.namespace in completed.stdout


async def test_no_client_certificate_is_refused(relayed: Settings) -> None:
    error = await refused(variant(relayed, tls_cert_file=None, tls_key_file=None))
    assert "client certificate" in str(error)


async def test_a_client_certificate_of_another_ca_is_refused(relayed: Settings, tmp_path: Path) -> None:
    stranger = LocalCA(tmp_path / "other-ca").leaf("stranger", client=True)
    error = await refused(variant(relayed, tls_cert_file=stranger.cert, tls_key_file=stranger.key))
    assert "client certificate" in str(error)


async def test_a_server_certificate_of_an_untrusted_ca_is_refused(relayed: Settings, tmp_path: Path) -> None:
    other = LocalCA(tmp_path / "other-ca")
    other.leaf("unused")  # makes the CA
    error = await refused(variant(relayed, tls_ca_file=other.cert_file))
    assert "the server's certificate is not trusted" in str(error)


async def test_a_wrong_api_key_is_unauthenticated(relayed: Settings) -> None:
    error = await refused(variant(relayed, api_key=SecretStr("wrong-key")))
    assert error.code == RPCStatusCode.UNAUTHENTICATED
    assert "UNAUTHENTICATED: wrong API key" in str(error)


async def test_no_api_key_is_unauthenticated(relayed: Settings) -> None:
    error = await refused(variant(relayed, api_key=None))
    assert error.code == RPCStatusCode.UNAUTHENTICATED


def test_the_key_is_in_a_private_file_and_nowhere_in_the_relay_s_command_line_or_log(
    relayed: Settings,
) -> None:
    paths = StackPaths.from_settings(relayed)
    key_file = paths.data("temporal-tls") / "api-key"
    assert key_file.read_text() == API_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    pid = int(paths.pid_file("temporal-tls").read_text())
    assert API_KEY not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert API_KEY not in paths.log("temporal-tls").read_text()
