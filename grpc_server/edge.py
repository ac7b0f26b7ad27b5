"""The stream edge: infra/stream-edge, a Go program in front of this server for many subscribers.

Python gRPC spends about 50 µs of CPU per message a stream sends, so one prediction to 1,000 streams
takes 50 ms of a core. The edge follows this server's predictions on one stream and fans each out
itself, at a few µs a message, as the server encoded it. A new subscription is opened on this server
first (request and metadata as the client sent them) and served once the server accepted it, so
validation and authentication answer exactly as here. Lookups the server has vouched for are answered
from the edge's latest predictions; other methods are relayed unchanged (docs/serving.md, "The stream edge").
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptopredict.settings import Settings
from grpc_server.hub import DEFAULT_QUEUE_SIZE
from grpc_server.server import bind_address

# The edge reads its upstream bearer token from here: a secret stays off the command line.
UPSTREAM_TOKEN_ENV = "STREAM_EDGE_UPSTREAM_TOKEN"


def edge_command(
    settings: Settings, binary: Path, upstream: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that run the edge `binary` (its caller builds it) for `settings`: it
    serves on grpc.edge_port with the server's TLS certificate when it has one, and follows the server on
    grpc.port, or at `upstream` (host:port) when given (a server in another pod)."""
    grpc = settings.grpc
    args = [
        str(binary),
        f"-listen={bind_address(grpc.host, grpc.edge_port)}",
        f"-upstream={upstream or bind_address(grpc.host, grpc.port)}",
        f"-queue-size={DEFAULT_QUEUE_SIZE}",
        # The edge holds its subscribers' streams, so it bounds them per caller as the server would.
        f"-max-streams-per-caller={grpc.max_streams_per_caller}",
        f"-stream-limit-exempt={','.join(grpc.stream_limit_exempt_hosts)}",
    ]
    if grpc.tls_cert_file and grpc.tls_key_file:
        args += [f"-tls-cert={grpc.tls_cert_file}", f"-tls-key={grpc.tls_key_file}"]
        args.append(f"-upstream-ca={grpc.client_ca_file}")
    if settings.metrics.edge_port >= 0:
        args.append(f"-metrics={bind_address(settings.metrics.host, settings.metrics.edge_port)}")
    env = dict(os.environ)
    token = grpc.client_bearer_token
    if token is not None:
        env[UPSTREAM_TOKEN_ENV] = token.get_secret_value()
    return args, env
