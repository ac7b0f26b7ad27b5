"""How every Temporal connection of the project is made from settings.temporal (cryptopredict/temporal_connect.py):
the SDK's TLS options, the `temporal` CLI's environment, the one-line reasons of a failed connect, and the
launcher's TLS relay component; the relay's own Go tests (infra/temporal-relay) run here too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCStatusCode, TLSConfig

from cryptopredict.settings import Settings, TemporalSettings
from cryptopredict.stack import build_components
from cryptopredict.stack.base import StackPaths, find_cmd
from cryptopredict.stack.temporal import Temporal
from cryptopredict.stack.temporal_relay import TemporalRelay
from cryptopredict.temporal_connect import (
    TemporalConnectError,
    cli_env,
    connect_temporal,
    describe,
    tls_config,
)

pytestmark = pytest.mark.unit

KEY = "s3cret-api-key"
RELAY = Path(__file__).resolve().parents[2] / "infra" / "temporal-relay"


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for name, path in files.items():
        path.write_bytes(f"-----{name}-----\n".encode())
    return files


def test_plaintext_unless_tls_is_on() -> None:
    assert tls_config(TemporalSettings()) is False


def test_an_api_key_is_never_sent_in_plaintext() -> None:
    assert tls_config(TemporalSettings(api_key=SecretStr(KEY))) == TLSConfig()


def test_tls_alone_checks_the_server_against_the_system_roots() -> None:
    assert tls_config(TemporalSettings(tls=True)) == TLSConfig()


def test_tls_files_and_server_name_become_the_sdk_s_options(pem_files: dict[str, Path]) -> None:
    temporal = TemporalSettings(
        tls_ca_file=pem_files["ca"],
        tls_cert_file=pem_files["cert"],
        tls_key_file=pem_files["key"],
        tls_server_name="temporal.internal",
    )
    assert tls_config(temporal) == TLSConfig(
        server_root_ca_cert=b"-----ca-----\n",
        client_cert=b"-----cert-----\n",
        client_private_key=b"-----key-----\n",
        domain="temporal.internal",
    )


def test_a_ca_file_alone_turns_tls_on(pem_files: dict[str, Path]) -> None:
    assert tls_config(TemporalSettings(tls_ca_file=pem_files["ca"])) == TLSConfig(
        server_root_ca_cert=b"-----ca-----\n"
    )


def test_a_missing_file_is_named_with_its_setting(tmp_path: Path, pem_files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(TemporalConnectError, match=r"temporal.tls_key_file .*nope.key: No such file"):
        tls_config(TemporalSettings(tls_cert_file=pem_files["cert"], tls_key_file=missing))


def test_describe_names_the_files_not_the_secrets(pem_files: dict[str, Path]) -> None:
    temporal = TemporalSettings(
        tls_cert_file=pem_files["cert"], tls_key_file=pem_files["key"], api_key=SecretStr(KEY)
    )
    assert describe(temporal) == f"TLS, client certificate {pem_files['cert']}, API key"
    assert describe(TemporalSettings()) == "plaintext"


def test_the_cli_gets_tls_and_the_key_in_its_environment(pem_files: dict[str, Path]) -> None:
    temporal = TemporalSettings(
        address="127.0.0.1:7243",
        tls_ca_file=pem_files["ca"],
        tls_cert_file=pem_files["cert"],
        tls_key_file=pem_files["key"],
        tls_server_name="localhost",
        api_key=SecretStr(KEY),
    )
    assert cli_env(temporal) == {
        "TEMPORAL_ADDRESS": "127.0.0.1:7243",
        "TEMPORAL_NAMESPACE": "default",
        "TEMPORAL_TLS": "true",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pem_files["ca"]),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pem_files["cert"]),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pem_files["key"]),
        "TEMPORAL_TLS_SERVER_NAME": "localhost",
        "TEMPORAL_API_KEY": KEY,
    }
    assert cli_env(TemporalSettings()) == {
        "TEMPORAL_ADDRESS": "127.0.0.1:7233",
        "TEMPORAL_NAMESPACE": "default",
    }


# What the SDK's core raised in these cases against the relay (tests/integration/test_temporal_tls.py).
AFTER = "Failed client connect: `get_system_info` call error after connection: "
TRANSPORT = (
    'Status { code: Unknown, message: "transport error", source: Some(tonic::transport::Error(Transport, '
)
CORE_ERRORS = {
    "wrong key": (
        AFTER + 'Status { code: Unauthenticated, message: "wrong API key", metadata: MetadataMap { headers: '
        '{"content-type": "application/grpc"} }, source: None }',
        "UNAUTHENTICATED: wrong API key",
        RPCStatusCode.UNAUTHENTICATED,
    ),
    "no client certificate": (
        AFTER + TRANSPORT + 'hyper::Error(Io, Custom { kind: InvalidData, error: "received fatal alert: '
        'CertificateRequired" }))) }',
        "the server requires a client certificate (received fatal alert: CertificateRequired)",
        None,
    ),
    "client certificate of another CA": (
        AFTER + TRANSPORT + 'hyper::Error(Io, Custom { kind: InvalidData, error: "received fatal alert: '
        'UnknownCA" }))) }',
        "the server refused the TLS handshake (received fatal alert: UnknownCA)",
        None,
    ),
    "hung up after the handshake": (
        AFTER + 'Status { code: Cancelled, message: "operation was canceled", source: Some(tonic::transport::'
        'Error(Transport, hyper::Error(Canceled, "connection closed"))) }',
        "the server closed the connection (connection closed): it refused our client certificate",
        None,
    ),
    "untrusted server": (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError("
        "Custom { kind: InvalidData, error: InvalidCertificate(BadSignature) }))",
        "the server's certificate is not trusted (InvalidCertificate(BadSignature)",
        None,
    ),
    "nothing listening": (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError("
        'ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, message: '
        '"Connection refused" })))',
        ": Connection refused",
        None,
    ),
}


@pytest.mark.parametrize("case", CORE_ERRORS)
async def test_a_failed_connect_is_one_line_with_the_endpoint_and_the_reason(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, reason, code = CORE_ERRORS[case]

    async def connect(*args: object, **kwargs: object) -> Client:
        raise RuntimeError(raw)

    monkeypatch.setattr(Client, "connect", connect)
    temporal = TemporalSettings(address="127.0.0.1:7243", tls=True, api_key=SecretStr(KEY))
    with pytest.raises(TemporalConnectError) as caught:
        await connect_temporal(temporal)
    assert str(caught.value).startswith("cannot connect to Temporal at 127.0.0.1:7243 (TLS, API key): ")
    assert reason in str(caught.value)
    assert caught.value.code == code


async def test_a_key_in_the_sdk_s_error_is_masked_and_not_chained(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(*args: object, **kwargs: object) -> Client:
        raise RuntimeError(f'invalid metadata value: "Bearer {KEY}"')

    monkeypatch.setattr(Client, "connect", connect)
    with pytest.raises(TemporalConnectError) as caught:
        await connect_temporal(TemporalSettings(api_key=SecretStr(KEY)))
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_the_sdk_gets_the_key_and_tls(
    monkeypatch: pytest.MonkeyPatch, pem_files: dict[str, Path]
) -> None:
    seen: dict[str, object] = {}

    async def connect(target: str, **kwargs: object) -> Client:
        seen.update(kwargs, target=target)
        return Client.__new__(Client)

    monkeypatch.setattr(Client, "connect", connect)
    temporal = TemporalSettings(
        address="t:7233", namespace="ns", tls_ca_file=pem_files["ca"], api_key=SecretStr(KEY)
    )
    await connect_temporal(temporal, identity="me")
    assert seen == {
        "target": "t:7233",
        "namespace": "ns",
        "api_key": KEY,
        "tls": TLSConfig(server_root_ca_cert=b"-----ca-----\n"),
        "identity": "me",
    }


def relay_settings(tmp_path: Path) -> Settings:
    temporal = TemporalSettings(
        address="127.0.0.1:7243", relay_upstream="127.0.0.1:7233", api_key=SecretStr(KEY)
    )
    return Settings(temporal=temporal, local_dir=tmp_path)


def test_the_relay_runs_only_with_a_relay_upstream(tmp_path: Path) -> None:
    assert "temporal-tls" not in build_components(Settings(local_dir=tmp_path))
    assert "temporal-tls" in build_components(relay_settings(tmp_path))
    assert "temporal-tls" in build_components(Settings(local_dir=tmp_path), disabled_too=True)


def test_behind_the_relay_the_dev_server_listens_on_the_upstream(tmp_path: Path) -> None:
    settings = relay_settings(tmp_path)
    server = Temporal(settings, StackPaths(tmp_path))
    command = server.start_cmd()
    assert command[command.index("--ip") + 1 : command.index("--port") + 2] == ["127.0.0.1", "--port", "7233"]
    assert server.server_settings() == TemporalSettings(address="127.0.0.1:7233")


def test_the_relay_gets_its_key_in_a_private_file_not_its_command_line(tmp_path: Path) -> None:
    relay = TemporalRelay(relay_settings(tmp_path), StackPaths(tmp_path))
    relay.prepare()
    command = relay.start_cmd()
    assert KEY not in " ".join(command)
    assert command[command.index("-listen") + 1] == "127.0.0.1:7243"
    assert command[command.index("-upstream") + 1] == "127.0.0.1:7233"
    assert relay.api_key_file.read_text() == KEY
    assert relay.api_key_file.stat().st_mode & 0o777 == 0o600
    assert relay.cmdline_marker() in command


def test_the_relay_go_tests_pass() -> None:
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        [str(go), "test", "-count=1", "./..."],
        cwd=RELAY,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout
