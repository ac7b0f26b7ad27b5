"""The local Kafka cluster's node configuration, the cluster profile's secrets, and the one-line reasons a
client is refused with."""

from __future__ import annotations

import asyncio
import socket
import ssl
import stat
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import SecretStr

from cryptopredict.kafka_admin import (
    KafkaConnectError,
    check_connection,
    connect_failure_reason,
    replication_refusal,
)
from cryptopredict.settings import KafkaSettings, Settings, load_settings
from cryptopredict.stack import _expand_kafka, build_components
from cryptopredict.stack.base import StackError, StackPaths
from cryptopredict.stack.kafka_cluster import KafkaNode, node_properties
from cryptopredict.stack.profile import TEMPORAL_RELAY_CERT, cluster_ca, ensure_cluster_secrets

pytestmark = pytest.mark.unit

CLUSTER = KafkaSettings(
    bootstrap_servers="127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292",
    replication_factor=3,
    min_insync_replicas=2,
    security_protocol="SASL_SSL",
    sasl_username="cryptopredict",
    sasl_password=SecretStr("pw-123"),
)


def props(node_id: int, kafka: KafkaSettings = CLUSTER) -> dict[str, str]:
    return node_properties(kafka, node_id, Path(f"/d/node-{node_id}"), Path("/k.pem"), Path("/ca.crt"))


@pytest.mark.parametrize(("node_id", "port"), [(1, 19092), (2, 19192), (3, 19292)])
def test_each_node_has_its_id_ports_and_data_dir(node_id: int, port: int) -> None:
    p = props(node_id)
    assert p["node.id"] == str(node_id)
    assert p["process.roles"] == "broker,controller"
    assert p["listeners"] == (
        f"CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1},INTERNAL://127.0.0.1:{port + 2}"
    )
    assert p["advertised.listeners"] == f"CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{port + 2}"
    assert p["log.dirs"] == f"/d/node-{node_id}"


def test_all_nodes_share_one_voter_list() -> None:
    voters = {props(n)["controller.quorum.voters"] for n in (1, 2, 3)}
    assert voters == {"1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"}


def test_topics_and_internal_topics_are_replicated_3_with_min_isr_2() -> None:
    p = props(1)
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert p[key] == "3", key
    assert p["min.insync.replicas"] == "2" and p["transaction.state.log.min.isr"] == "2"
    # Fast failover like the single node: a killed broker is fenced within seconds.
    assert p["broker.session.timeout.ms"] == "3000"


def test_sasl_ssl_clients_and_brokers_scram_controllers_tls_pem_stores() -> None:
    p = props(2)
    assert p["listener.security.protocol.map"] == "CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SSL"
    assert p["inter.broker.listener.name"] == "INTERNAL"
    assert p["sasl.enabled.mechanisms"] == p["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert p["ssl.keystore.type"] == p["ssl.truststore.type"] == "PEM"
    assert p["ssl.keystore.location"] == "/k.pem" and p["ssl.truststore.location"] == "/ca.crt"
    for listener in ("client", "internal"):
        jaas = p[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"]
        assert 'username="cryptopredict" password="pw-123";' in jaas


def test_a_plaintext_cluster_has_no_tls_or_sasl() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:29092,127.0.0.1:29192")
    p = props(2, kafka)
    assert p["listener.security.protocol.map"] == "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not [key for key in p if key.startswith(("ssl.", "sasl.", "listener.name."))]


def test_the_scram_user_is_made_at_format_time(tmp_path: Path) -> None:
    node = KafkaNode(Settings(local_dir=tmp_path, kafka=CLUSTER), StackPaths(tmp_path), 1)
    assert node.format_args() == ["--add-scram", "SCRAM-SHA-512=[name=cryptopredict,password=pw-123]"]
    assert node.data_dir == tmp_path / "kafka-cluster" / "node-1"
    assert node.libs == tmp_path / "kafka" / "libs"  # the single node's jars


def test_the_launcher_runs_a_node_per_bootstrap_server(tmp_path: Path) -> None:
    single = build_components(Settings(local_dir=tmp_path))
    assert "kafka" in single and not [n for n in single if n.startswith("kafka-")]
    cluster = build_components(Settings(local_dir=tmp_path, kafka=CLUSTER))
    nodes = [n for n in cluster if n.startswith("kafka")]
    assert nodes == ["kafka-1", "kafka-2", "kafka-3"]
    assert _expand_kafka(cluster, ["kafka", "postgres"]) == ["kafka-1", "kafka-2", "kafka-3", "postgres"]
    # `stack down` knows both Kafkas (nodes made earlier too), and "kafka" stops the profile's own only.
    for n in (1, 2, 3):
        (tmp_path / "kafka-cluster" / f"node-{n}").mkdir(parents=True)
    everything = build_components(Settings(local_dir=tmp_path), disabled_too=True)
    assert {"kafka", "kafka-1", "kafka-2", "kafka-3"} <= set(everything)
    assert _expand_kafka(everything, ["kafka"]) == ["kafka"]
    everything = build_components(Settings(local_dir=tmp_path, kafka=CLUSTER), disabled_too=True)
    assert _expand_kafka(everything, ["kafka"]) == ["kafka-1", "kafka-2", "kafka-3"]


def test_cluster_secrets_are_made_once_private_and_read_by_the_profile(tmp_path: Path, monkeypatch) -> None:
    path = ensure_cluster_secrets(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert ensure_cluster_secrets(tmp_path) == path and path.read_text() == text  # kept, not remade
    monkeypatch.setenv("CRYPTOPREDICT_LOCAL_DIR", str(tmp_path))
    settings = load_settings("cluster")
    kafka, temporal = settings.kafka, settings.temporal
    assert kafka.sasl_password is not None and len(kafka.sasl_password.get_secret_value()) >= 24
    assert kafka.ssl_ca_file is not None and kafka.ssl_ca_file.is_absolute() and kafka.ssl_ca_file.exists()
    assert temporal.tls_cert_file is not None and temporal.tls_cert_file.exists()
    assert temporal.tls_key_file is not None and temporal.tls_ca_file == kafka.ssl_ca_file
    relay = cluster_ca(tmp_path).leaf(TEMPORAL_RELAY_CERT)  # made with the secrets, by the same CA
    assert relay.cert.exists() and relay.key.exists() and cluster_ca(tmp_path).cert_file == kafka.ssl_ca_file
    assert temporal.api_key is not None and len(temporal.api_key.get_secret_value()) >= 32


def test_refusal_reasons_name_the_cause_without_secrets() -> None:
    wrong = SaslAuthenticationFailed("Authentication failed due to invalid credentials")
    assert connect_failure_reason(wrong, CLUSTER) == (
        "SASL SCRAM-SHA-512 authentication failed for user 'cryptopredict' (wrong username or password)"
    )
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    assert connect_failure_reason(untrusted, CLUSTER).startswith(
        "TLS certificate not trusted (unable to get local issuer certificate"
    )
    closed = KafkaConnectionError("Connection at 127.0.0.1:19092 closed")
    assert connect_failure_reason(closed, CLUSTER) == (
        "the broker closed the connection: is its listener SASL_SSL?"
    )
    assert "pw-123" not in repr([connect_failure_reason(e, CLUSTER) for e in (wrong, untrusted, closed)])
    assert replication_refusal(3, 1, "127.0.0.1:9092") == (
        "kafka.replication_factor 3 is above the 1 broker(s) at 127.0.0.1:9092: topics cannot be created"
    )


async def test_nothing_listening_is_one_line_and_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(KafkaConnectError) as caught:
        await asyncio.wait_for(check_connection(kafka), 5)
    assert str(caught.value) == f"kafka 127.0.0.1:{port}: connection refused (no broker listening)"


async def test_a_listener_that_drops_the_client_is_named() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(KafkaConnectError, match="closed the connection: is its listener PLAINTEXT"):
            await asyncio.wait_for(check_connection(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")), 5)
    finally:
        server.close()
        await server.wait_closed()


def test_a_password_changed_after_format_is_refused_with_the_way_out(tmp_path: Path) -> None:
    node = KafkaNode(Settings(local_dir=tmp_path, kafka=CLUSTER), StackPaths(tmp_path), 2)
    node.log_dir.mkdir(parents=True)
    (node.log_dir / "meta.properties").write_text("node.id=2\n")  # formatted before
    (node.data_dir / "scram-password.sha256").write_text("digest of another password")
    with pytest.raises(StackError, match=r"differs from the one .* was formatted with"):
        node.prepare()
