"""The one way the project connects to Temporal (workflow clients, workers, the launcher's health checks,
tests, benches): TLS and the API key of `settings.temporal` applied the same everywhere.

A connection that fails raises `TemporalConnectError`: one line naming the endpoint, how we connected and
the reason. The API key and the private key never appear in it, nor in a log line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from cryptopredict.settings import TemporalSettings


class TemporalConnectError(ConnectionError):
    """Temporal could not be reached, or refused us; `code` is the server's status when it answered."""

    def __init__(self, message: str, code: RPCStatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalConnectError(f"temporal.{setting} {path}: {exc.strerror or exc}") from None


def tls_config(temporal: TemporalSettings) -> TLSConfig | bool:
    """The SDK's TLS options for `temporal`: False (plaintext) unless TLS is on. Without a CA file the
    system's roots check the server (Temporal Cloud); the server name defaults to the address's host."""
    if not temporal.uses_tls:
        return False
    return TLSConfig(
        server_root_ca_cert=_read(temporal.tls_ca_file, "tls_ca_file"),
        client_cert=_read(temporal.tls_cert_file, "tls_cert_file"),
        client_private_key=_read(temporal.tls_key_file, "tls_key_file"),
        domain=temporal.tls_server_name,
    )


def describe(temporal: TemporalSettings) -> str:
    """How we connect, without secrets: e.g. `TLS, client certificate /x/client.crt, API key`."""
    parts = ["TLS" if temporal.uses_tls else "plaintext"]
    if temporal.tls_cert_file is not None:
        parts.append(f"client certificate {temporal.tls_cert_file}")
    if temporal.api_key is not None:
        parts.append("API key")
    return ", ".join(parts)


# The SDK's core reports a failed connect as one line of Rust debug output; these pick out its reason.
_STATUS = re.compile(r'Status \{ code: (\w+), message: "((?:[^"\\]|\\.)*)"')
_CAUSES = re.compile(r'(?:error|message): "([^"]+)"|error: (\w+\([\w ]*\))|Canceled, "([^"]+)"')


def _reason(exc: BaseException, temporal: TemporalSettings) -> tuple[str, RPCStatusCode | None]:
    """What went wrong, in a few words, and the server's status code when it answered."""
    if isinstance(exc, RPCError):
        return f"{exc.status.name}: {exc.message}", exc.status
    text = " ".join(str(exc).split()) or type(exc).__name__
    status = _STATUS.search(text)
    # A status with a source is the transport's failure, not the server's answer.
    if status and "source: Some(" not in text[status.end() :]:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", status.group(1)).upper()
        return f"{name}: {status.group(2)}", RPCStatusCode.__members__.get(name)
    causes = ["".join(groups) for groups in _CAUSES.findall(text)]
    cause = causes[-1] if causes else text
    if cause.startswith("InvalidCertificate"):
        return f"the server's certificate is not trusted ({cause}; CA: temporal.tls_ca_file)", None
    if "CertificateRequired" in cause:
        return f"the server requires a client certificate ({cause}): set temporal.tls_cert_file", None
    if "fatal alert" in cause:
        return f"the server refused the TLS handshake ({cause}): is our client certificate of its CA?", None
    if temporal.uses_tls and ("broken pipe" in cause or "connection closed" in cause):
        # TLS 1.3: a server that refuses the client's certificate (or its absence) hangs up after the
        # handshake, and the client sees the alert, or only the closed connection.
        return (
            f"the server closed the connection ({cause}): it refused our client certificate, or its absence",
            None,
        )
    return cause, None


async def connect_temporal(temporal: TemporalSettings, **options: Any) -> Client:
    """A client of `temporal.address` / `temporal.namespace` with its TLS and API key; `options` go to
    `Client.connect` (data converter, runtime, ...)."""
    api_key = temporal.api_key.get_secret_value() if temporal.api_key is not None else None
    tls = tls_config(temporal)
    try:
        return await Client.connect(
            temporal.address, namespace=temporal.namespace, api_key=api_key, tls=tls, **options
        )
    except Exception as exc:
        reason, code = _reason(exc, temporal)
        if api_key:
            reason = reason.replace(api_key, "***")
        error = TemporalConnectError(
            f"cannot connect to Temporal at {temporal.address} ({describe(temporal)}): {reason}", code
        )
        # The SDK's own error is kept as the cause, unless it carries the key.
        if api_key and api_key in repr(exc):
            raise error from None
        raise error from exc


def cli_env(temporal: TemporalSettings) -> dict[str, str]:
    """Environment variables that make the `temporal` CLI connect as our clients do. The API key goes in
    the environment, never on a command line, which every user of the machine can read."""
    env = {"TEMPORAL_ADDRESS": temporal.address, "TEMPORAL_NAMESPACE": temporal.namespace}
    if temporal.uses_tls:
        env["TEMPORAL_TLS"] = "true"
        files = {
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": temporal.tls_ca_file,
            "TEMPORAL_TLS_CLIENT_CERT_PATH": temporal.tls_cert_file,
            "TEMPORAL_TLS_CLIENT_KEY_PATH": temporal.tls_key_file,
        }
        env |= {name: str(path) for name, path in files.items() if path is not None}
        if temporal.tls_server_name:
            env["TEMPORAL_TLS_SERVER_NAME"] = temporal.tls_server_name
    if temporal.api_key is not None:
        env["TEMPORAL_API_KEY"] = temporal.api_key.get_secret_value()
    return env
