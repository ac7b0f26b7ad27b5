"""Apache Kafka 4.1 in KRaft mode, one combined broker+controller, jars resolved with Maven."""

from __future__ import annotations

import base64
import logging
import subprocess
import threading
import uuid
from pathlib import Path

from cryptopredict.settings import KafkaSettings, Settings
from cryptopredict.stack.base import REPO_ROOT, Component, StackError, find_cmd

logger = logging.getLogger(__name__)

KAFKA_JAR = "kafka_2.13-4.1.1.jar"
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"

LOG4J2_PROPERTIES = """\
# Written by cryptopredict.stack.kafka: everything to stdout, which is the component's log file.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

# Shared by the single node and the cluster's nodes: consumers join at once, and a crashed broker is
# replaced within seconds.
FAST_FAILOVER = {
    # Consumers (Faust) join at once instead of waiting 3 s for more members.
    "group.initial.rebalance.delay.ms": "0",
    # After a crash the controller keeps the dead broker registered for this long and
    # rejects the restarted one (DUPLICATE_BROKER_REGISTRATION); 9 s by default.
    "broker.heartbeat.interval.ms": "1000",
    "broker.session.timeout.ms": "3000",
    # Let short client session timeouts from settings through.
    "group.min.session.timeout.ms": "1000",
}

# The cluster's nodes start at once in threads of one launcher: one Maven run, one cluster id.
_SETUP_LOCK = threading.Lock()


def is_cluster(kafka: KafkaSettings) -> bool:
    """Several bootstrap servers or a secured listener: the launcher runs a cluster (stack/kafka_cluster.py)
    instead of the single plaintext node."""
    return len(kafka.servers) > 1 or kafka.security_protocol != "PLAINTEXT"


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


class Kafka(Component):
    name = "kafka"
    startup_timeout_s = 90.0
    heap: tuple[str, ...] = ("-Xms256m", "-Xmx512m")

    @classmethod
    def enabled_for(cls, settings: Settings) -> bool:
        return not is_cluster(settings.kafka)

    @property
    def kafka(self) -> KafkaSettings:
        return self.settings.kafka

    @property
    def host(self) -> str:
        return self.kafka.first_host_port[0]

    @property
    def endpoint(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def libs(self) -> Path:
        return self.data_dir / "libs"

    @property
    def config(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def cluster_id_file(self) -> Path:
        return self.data_dir / "cluster.id"

    def install(self) -> None:
        with _SETUP_LOCK:
            self._install()

    def _install(self) -> None:
        if (self.libs / KAFKA_JAR).exists():
            return
        mvn = find_cmd([], "mvn")
        java = find_cmd([], "java")
        logger.info("kafka: resolving broker jars with Maven into %s (java: %s)", self.libs, java)
        self.libs.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(mvn),
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.libs}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not (self.libs / KAFKA_JAR).exists():
            raise StackError(f"kafka: Maven failed to resolve jars:\n{result.stdout}\n{result.stderr}")

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_properties(self.server_properties()))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if not self.formatted:
            self._format_storage()

    @property
    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def server_properties(self) -> dict[str, str]:
        host, port = self.kafka.first_host_port
        controller = f"{host}:{self.kafka.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(self.kafka.partitions),
            "auto.create.topics.enable": "true",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            **FAST_FAILOVER,
        }
        return props

    def _java(self, main_class: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        log4j = self.data_dir / "log4j2.properties"
        return [
            str(find_cmd([], "java")),
            *jvm,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def format_args(self) -> list[str]:
        """StorageTool arguments beyond the cluster id and config: a single node is its own quorum."""
        return ["--standalone"]

    def _format_storage(self) -> None:
        cluster_id = self._cluster_id()
        logger.info("%s: formatting storage %s (cluster id %s)", self.name, self.log_dir, cluster_id)
        # The arguments may hold the SCRAM password: the JVM reads them from a private file (`java @file`),
        # so they never show on a command line.
        arguments = self.data_dir / "format.args"
        arguments.touch(mode=0o600)
        arguments.write_text(
            "\n".join(["format", "-t", cluster_id, "-c", str(self.config), *self.format_args()]) + "\n"
        )
        cmd = self._java("kafka.tools.StorageTool", f"@{arguments}")
        try:
            with self.log_path.open("ab") as log:
                result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        finally:
            arguments.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"{self.name}: storage format failed (code {result.returncode}); see {self.log_path}"
            )

    def _cluster_id(self) -> str:
        with _SETUP_LOCK:
            if not self.cluster_id_file.exists():
                self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
                # Kafka's Uuid text form: URL-safe base64 of 16 random bytes, unpadded.
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
                self.cluster_id_file.write_text(cluster_id)
            return self.cluster_id_file.read_text().strip()

    def start_cmd(self) -> list[str]:
        # The broker's collection pauses, as Kafka's own start script logs them: a pause in the broker
        # stalls every Kafka hop at once.
        gc_log = self.log_path.with_name(f"{self.log_path.stem}-gc.log")
        gc = f"-Xlog:gc:file={gc_log}:time,uptime:filecount=2,filesize=10m"
        return self._java("kafka.Kafka", str(self.config), jvm=(*self.heap, gc))

    def cmdline_marker(self) -> str:
        return f"kafka.Kafka {self.config}"

    async def health(self) -> str:
        from cryptopredict.kafka_admin import admin_client

        # Through the project's admin client: the security settings, and one clear reason on failure.
        async with admin_client(self.kafka, request_timeout_ms=4000) as admin:
            cluster = await admin.describe_cluster()
        return f"cluster {cluster['cluster_id']}, {len(cluster['brokers'])} broker(s)"

    async def after_healthy(self) -> None:
        from cryptopredict.kafka_admin import ensure_topics

        await ensure_topics(self.kafka)
