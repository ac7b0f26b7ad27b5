"""The stream edge: infra/stream-edge, a Go program beside this server for many subscribers.

Python gRPC spends about 50 µs of CPU per message a stream sends, so one prediction to 1,000 streams
takes 50 ms of a core. The edge reads the predictions topic from Kafka itself, checks each record against
this server's validation (it never serves a record the server would refuse, and refuses a few forms that
pydantic tolerates and no producer writes; a record it refuses becomes a dead letter), encodes it as this
server does, and fans each prediction out at a few µs a message. A new subscription is opened on this
server first (request and metadata as the client sent them) and served once the server accepted it, so
validation and authentication answer exactly as here. Lookups the server has vouched for are answered
from the edge's latest predictions; other methods are relayed unchanged (docs/serving.md, "The stream
edge").
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptopredict.settings import KafkaSettings, Settings
from cryptopredict.topics import DEAD_LETTERS, PREDICTIONS, topic_name
from grpc_server.hub import DEFAULT_QUEUE_SIZE
from grpc_server.server import bind_address

# The edge reads the Kafka SCRAM password from here: a secret stays off the command line.
KAFKA_PASSWORD_ENV = "STREAM_EDGE_KAFKA_SASL_PASSWORD"


def kafka_flags(kafka: KafkaSettings) -> list[str]:
    """The edge's flags for `kafka`, as cryptopredict/kafka_client.py configures the Python clients."""
    flags = [
        f"-kafka-brokers={','.join(kafka.servers)}",
        f"-kafka-topic={topic_name(PREDICTIONS, kafka.topic_prefix)}",
        f"-kafka-dead-letter-topic={topic_name(DEAD_LETTERS, kafka.topic_prefix)}",
        f"-kafka-security-protocol={kafka.security_protocol}",
    ]
    if kafka.security_protocol != "PLAINTEXT":  # as kafka_client.ssl_context: no TLS at all in plaintext
        if kafka.ssl_ca_file is not None:
            flags.append(f"-kafka-ca-file={kafka.ssl_ca_file}")
        if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
            flags += [f"-kafka-cert-file={kafka.ssl_cert_file}", f"-kafka-key-file={kafka.ssl_key_file}"]
    if kafka.security_protocol == "SASL_SSL":
        flags += [
            f"-kafka-sasl-mechanism={kafka.sasl_mechanism}",
            f"-kafka-sasl-username={kafka.sasl_username}",
        ]
    return flags


def edge_command(
    settings: Settings, binary: Path, upstream: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that run the edge `binary` (its caller builds it) for `settings`: it
    serves on grpc.edge_port with the server's TLS certificate when it has one, reads the predictions
    topic with the Kafka settings, and has subscriptions admitted by the server on grpc.port, or at
    `upstream` (host:port) when given (a server in another pod)."""
    grpc = settings.grpc
    args = [
        str(binary),
        f"-listen={bind_address(grpc.host, grpc.edge_port)}",
        f"-upstream={upstream or bind_address(grpc.host, grpc.port)}",
        f"-queue-size={DEFAULT_QUEUE_SIZE}",
        # The edge holds its subscribers' streams, so it bounds them per caller as the server would.
        f"-max-streams-per-caller={grpc.max_streams_per_caller}",
        f"-stream-limit-exempt={','.join(grpc.stream_limit_exempt_hosts)}",
        *kafka_flags(settings.kafka),
    ]
    if grpc.tls_cert_file and grpc.tls_key_file:
        args += [f"-tls-cert={grpc.tls_cert_file}", f"-tls-key={grpc.tls_key_file}"]
        args.append(f"-upstream-ca={grpc.client_ca_file}")
    if settings.metrics.edge_port >= 0:
        args.append(f"-metrics={bind_address(settings.metrics.host, settings.metrics.edge_port)}")
    env = dict(os.environ)
    if settings.kafka.sasl_password is not None:
        env[KAFKA_PASSWORD_ENV] = settings.kafka.sasl_password.get_secret_value()
    return args, env
