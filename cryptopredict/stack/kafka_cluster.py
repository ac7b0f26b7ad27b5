"""Apache Kafka as several combined controller+broker KRaft nodes on loopback (the cluster profile).

One node per server of `kafka.bootstrap_servers`, each its own process, pid file, log (`kafka-<n>`) and data
directory (`<local_dir>/kafka-cluster/node-<n>/`), sharing the single node's jars. Node n serves clients on
its bootstrap port, the controller quorum on port+1 and the other brokers on port+2. With SASL_SSL, clients
and brokers authenticate with SCRAM-SHA-512 (the user is written into the storage at format time), and the
controller listener is TLS; certificates come from the cluster profile's CA (`stack/profile.py`). There is
no authorizer: every authenticated user may do everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

from cryptopredict.settings import KafkaSettings, Settings
from cryptopredict.stack.base import StackError, StackPaths, split_host_port
from cryptopredict.stack.kafka import FAST_FAILOVER, Kafka, is_cluster
from cryptopredict.stack.profile import cluster_ca

logger = logging.getLogger(__name__)

CONTROLLER_OFFSET = 1
INTERNAL_OFFSET = 2
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


def node_addresses(kafka: KafkaSettings) -> list[tuple[str, int]]:
    """(host, client port) of node 1, 2, ...: the bootstrap servers in order."""
    return [split_host_port(server) for server in kafka.servers]


def node_properties(
    kafka: KafkaSettings, node_id: int, log_dir: Path, keystore: Path, truststore: Path
) -> dict[str, str]:
    """server.properties of node `node_id` (1-based) of the cluster that `kafka` describes."""
    nodes = node_addresses(kafka)
    host, port = nodes[node_id - 1]
    client, internal = kafka.security_protocol, kafka.security_protocol
    # SCRAM users live in the metadata log, which controllers need before they can read it: TLS only.
    controller = "PLAINTEXT" if kafka.security_protocol == "PLAINTEXT" else "SSL"
    voters = ",".join(f"{n}@{h}:{p + CONTROLLER_OFFSET}" for n, (h, p) in enumerate(nodes, start=1))
    rf, min_isr = str(kafka.replication_factor), str(kafka.min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": (
            f"CLIENT://{host}:{port},CONTROLLER://{host}:{port + CONTROLLER_OFFSET},"
            f"INTERNAL://{host}:{port + INTERNAL_OFFSET}"
        ),
        "advertised.listeners": f"CLIENT://{host}:{port},INTERNAL://{host}:{port + INTERNAL_OFFSET}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": f"CLIENT:{client},INTERNAL:{internal},CONTROLLER:{controller}",
        "log.dirs": str(log_dir),
        "num.partitions": str(kafka.partitions),
        "auto.create.topics.enable": "true",
        # Every topic, the brokers' own included, is replicated like the project's topics.
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        **FAST_FAILOVER,
    }
    if kafka.security_protocol != "PLAINTEXT":
        props |= {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(truststore),
        }
    if kafka.security_protocol == "SASL_SSL":
        assert kafka.sasl_password is not None  # KafkaSettings refuses SASL_SSL without one
        mechanism = kafka.sasl_mechanism
        # The brokers talk to each other as the project's user; each SASL listener needs a login module.
        jaas = (
            f'{SCRAM_LOGIN} required username="{kafka.sasl_username}" '
            f'password="{kafka.sasl_password.get_secret_value()}";'
        )
        props |= {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.client.{mechanism.lower()}.sasl.jaas.config": jaas,
            f"listener.name.internal.{mechanism.lower()}.sasl.jaas.config": jaas,
        }
    return props


class KafkaNode(Kafka):
    """Node `node_id` of the local cluster: a combined controller+broker in its own process."""

    name = "kafka-node"
    startup_timeout_s = 120.0  # three JVMs start at once on two cores
    heap = ("-Xms128m", "-Xmx384m")

    @classmethod
    def enabled_for(cls, settings: Settings) -> bool:
        return is_cluster(settings.kafka)

    def __init__(self, settings: Settings, paths: StackPaths, node_id: int) -> None:
        super().__init__(settings, paths)
        self.node_id = node_id
        # Each node is a component of its own: pid file, log and status row.
        self.name = f"kafka-{node_id}"  # type: ignore[misc]

    @property
    def cluster_dir(self) -> Path:
        return self.paths.data("kafka-cluster")

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / f"node-{self.node_id}"

    @property
    def libs(self) -> Path:
        # The single node's jars: one Maven resolution for both profiles.
        return self.paths.data("kafka") / "libs"

    @property
    def cluster_id_file(self) -> Path:
        return self.cluster_dir / "cluster.id"

    @property
    def address(self) -> str:
        servers = self.kafka.servers
        # A node made by another profile (found to stop it) may lie beyond these settings' servers.
        return servers[self.node_id - 1] if self.node_id <= len(servers) else "127.0.0.1:0"

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def endpoint(self) -> str:
        return self.address

    @property
    def node_kafka(self) -> KafkaSettings:
        """The settings with this node as the only bootstrap server: its health is its own."""
        return self.kafka.model_copy(update={"bootstrap_servers": self.address})

    @property
    def keystore(self) -> Path:
        return self.data_dir / "keystore.pem"

    @property
    def truststore(self) -> Path:
        return cluster_ca(self.paths.root).cert_file

    def server_properties(self) -> dict[str, str]:
        return node_properties(self.kafka, self.node_id, self.log_dir, self.keystore, self.truststore)

    def prepare(self) -> None:
        from cryptopredict.kafka_admin import replication_refusal

        nodes = len(self.kafka.servers)
        if self.kafka.replication_factor > nodes:
            raise StackError(
                replication_refusal(self.kafka.replication_factor, nodes, self.kafka.bootstrap_servers)
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kafka.security_protocol != "PLAINTEXT":
            leaf = cluster_ca(self.paths.root).leaf(f"kafka-node-{self.node_id}")
            self.keystore.touch(mode=0o600)
            self.keystore.write_bytes(leaf.key.read_bytes() + leaf.cert.read_bytes())
        self._check_scram_password()
        # The file holds the inter-broker password.
        self.config.touch(mode=0o600)
        super().prepare()
        if self.kafka.sasl_password is not None:
            self._password_digest_file.write_text(self._password_digest())

    @property
    def _password_digest_file(self) -> Path:
        return self.data_dir / "scram-password.sha256"

    def _password_digest(self) -> str:
        assert self.kafka.sasl_password is not None
        return hashlib.sha256(self.kafka.sasl_password.get_secret_value().encode()).hexdigest()

    def _check_scram_password(self) -> None:
        """The SCRAM user is written at format time: a password changed since then cannot log in."""
        if self.kafka.sasl_password is None or not self.formatted or not self._password_digest_file.exists():
            return
        if self._password_digest_file.read_text().strip() != self._password_digest():
            raise StackError(
                f"{self.name}: kafka.sasl_password differs from the one {self.cluster_dir} was formatted "
                f"with (were the profile's secrets made again?): stop the cluster and delete "
                f"{self.cluster_dir} to start it over"
            )

    def format_args(self) -> list[str]:
        # Static voters (controller.quorum.voters) need no --standalone / --initial-controllers.
        if self.kafka.security_protocol != "SASL_SSL":
            return []
        assert self.kafka.sasl_password is not None
        user = f"name={self.kafka.sasl_username},password={self.kafka.sasl_password.get_secret_value()}"
        return ["--add-scram", f"{self.kafka.sasl_mechanism}=[{user}]"]

    async def health(self) -> str:
        from cryptopredict.kafka_admin import admin_client

        async with admin_client(self.node_kafka, request_timeout_ms=4000) as admin:
            cluster = await admin.describe_cluster()
        ids = sorted(broker["node_id"] for broker in cluster["brokers"])
        if self.node_id not in ids:
            raise StackError(f"node {self.node_id} answers but is not a registered broker yet ({ids})")
        return f"node {self.node_id} of cluster {cluster['cluster_id']}, brokers {ids}"

    async def after_healthy(self) -> None:
        from aiokafka.errors import KafkaError

        from cryptopredict.kafka_admin import admin_client, broker_count, ensure_topics

        # Topics replicated N times need N brokers: wait for the nodes that start beside this one.
        wanted = len(self.kafka.servers)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            try:
                async with admin_client(self.kafka, request_timeout_ms=4000) as admin:
                    while (brokers := await broker_count(admin)) < wanted:
                        if time.monotonic() > deadline:
                            raise StackError(f"{self.name}: only {brokers} of {wanted} brokers registered")
                        await asyncio.sleep(0.5)
                await ensure_topics(self.kafka)
                return
            except KafkaError as exc:
                # A node that registered but does not serve requests yet (NodeNotReadyError) is asked again.
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                logger.info("%s: %s; asking again", self.name, exc)
                await asyncio.sleep(1.0)


def kafka_nodes(settings: Settings, paths: StackPaths, made_too: bool = False) -> list[KafkaNode]:
    """The cluster's nodes for these settings; with `made_too` also those whose data directory exists
    (another profile made them), so `stack down` stops them whatever the profile."""
    ids = set(range(1, len(settings.kafka.servers) + 1)) if is_cluster(settings.kafka) else set()
    if made_too:
        made = paths.data("kafka-cluster").glob("node-*")
        ids |= {int(d.name.removeprefix("node-")) for d in made if d.name.removeprefix("node-").isdigit()}
    return [KafkaNode(settings, paths, n) for n in sorted(ids)]
