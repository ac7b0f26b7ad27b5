"""The stream edge's command line (grpc_server/edge.py): the Kafka settings become its flags as they become
the Python clients' arguments (cryptopredict/kafka_client.py), and the SCRAM password stays off it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from cryptopredict.settings import KafkaSettings, Settings
from grpc_server.edge import KAFKA_PASSWORD_ENV, edge_command

pytestmark = pytest.mark.unit

BINARY = Path("/opt/stream-edge")


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) for arg in args[1:])


def with_kafka(**kafka: object) -> Settings:
    return Settings().model_copy(update={"kafka": KafkaSettings.model_validate(kafka)})


def test_plaintext_kafka_with_a_topic_prefix() -> None:
    args, env = edge_command(
        with_kafka(bootstrap_servers="k1:9092, k2:9092", topic_prefix="test.run-1-"), BINARY
    )
    assert args[0] == str(BINARY)
    given = flags(args)
    assert given["kafka-brokers"] == "k1:9092,k2:9092"
    assert given["kafka-topic"] == "test.run-1-predictions"
    assert given["kafka-dead-letter-topic"] == "test.run-1-dead_letters"
    assert given["kafka-security-protocol"] == "PLAINTEXT"
    assert not {"kafka-ca-file", "kafka-cert-file", "kafka-sasl-username"} & given.keys()
    assert KAFKA_PASSWORD_ENV not in env


def test_sasl_ssl_with_mutual_tls_passes_files_and_the_password_in_the_environment() -> None:
    settings = with_kafka(
        bootstrap_servers="127.0.0.1:19092",
        security_protocol="SASL_SSL",
        ssl_ca_file="/certs/ca.crt",
        ssl_cert_file="/certs/client.crt",
        ssl_key_file="/certs/client.key",
        sasl_username="cryptopredict",
        sasl_password=SecretStr("s3cret"),
    )
    args, env = edge_command(settings, BINARY)
    given = flags(args)
    assert (given["kafka-security-protocol"], given["kafka-ca-file"]) == ("SASL_SSL", "/certs/ca.crt")
    assert (given["kafka-cert-file"], given["kafka-key-file"]) == ("/certs/client.crt", "/certs/client.key")
    assert (given["kafka-sasl-mechanism"], given["kafka-sasl-username"]) == ("SCRAM-SHA-512", "cryptopredict")
    assert env[KAFKA_PASSWORD_ENV] == "s3cret"
    assert not any("s3cret" in arg for arg in args)


def test_ssl_without_a_ca_uses_the_system_roots_and_plaintext_ignores_tls_files() -> None:
    ssl = flags(edge_command(with_kafka(security_protocol="SSL"), BINARY)[0])
    assert ssl["kafka-security-protocol"] == "SSL" and "kafka-ca-file" not in ssl
    # As kafka_client.ssl_context: files set with PLAINTEXT are not used (the edge would refuse them).
    plain = flags(edge_command(with_kafka(ssl_ca_file="/certs/ca.crt"), BINARY)[0])
    assert "kafka-ca-file" not in plain
