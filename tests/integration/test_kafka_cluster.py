"""The cluster profile's Kafka: three KRaft nodes on loopback started by the launcher, SASL_SSL clients,
topics replicated 3 with min ISR 2, a clear refusal of a wrong password, and a produce that survives the
kill -9 of a partition leader, which then rejoins.

The cluster is left running afterwards (like the single-node stack): the cluster drill reuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator

import pytest
import topic_prefixes
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from cryptopredict import stack
from cryptopredict.kafka_admin import (
    KafkaConnectError,
    TopicCreationError,
    admin_client,
    delete_topics,
    ensure_topics,
    read_topic,
    topic_names,
)
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import KafkaSettings, Settings
from cryptopredict.stack.base import StackPaths, live_pid
from cryptopredict.stack.kafka_cluster import KafkaNode
from cryptopredict.stack.profile import load_profile_settings
from cryptopredict.topics import ALL_TOPICS, TRADES, topic_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[Settings]:
    settings = load_profile_settings("cluster")
    stack.up(settings, only=["kafka"])
    prefix = topic_prefixes.run_prefix("cluster")
    yield settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})
    # The cluster stays up for the drill; this module's topics go.
    names = [t for t in asyncio.run(topic_names(settings.kafka)) if t.startswith(prefix)]
    asyncio.run(delete_topics(settings.kafka, names))


@pytest.fixture(scope="module")
async def topics(cluster: Settings) -> list[str]:
    await ensure_topics(cluster.kafka)
    return [topic_name(t, cluster.kafka.topic_prefix) for t in ALL_TOPICS]


@contextlib.asynccontextmanager
async def producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    # Idempotent: a send retried across the failover is written once.
    client = AIOKafkaProducer(**client_kwargs(kafka), acks="all", enable_idempotence=True)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def read_values(kafka: KafkaSettings, topic: str, count: int, group: str | None = None) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, **client_kwargs(kafka), group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    values += [r.value for r in records]
        if group is not None:
            await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def test_three_brokers_answer_over_sasl_ssl(cluster: Settings) -> None:
    kafka = cluster.kafka
    assert kafka.security_protocol == "SASL_SSL" and len(kafka.servers) == 3
    async with admin_client(kafka) as admin:
        described = await admin.describe_cluster()
    assert sorted(b["node_id"] for b in described["brokers"]) == [1, 2, 3]
    statuses = {s.name: s for s in stack.status(cluster) if s.name.startswith("kafka")}
    assert sorted(statuses) == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(s.healthy and s.managed for s in statuses.values()), statuses


async def test_project_topics_are_replicated_3_with_min_isr_2(cluster: Settings, topics: list[str]) -> None:
    async with admin_client(cluster.kafka) as admin:
        described = await admin.describe_topics(topics)
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        broker = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    for topic in described:
        assert topic["error_code"] == 0, topic
        assert len(topic["partitions"]) == cluster.kafka.partitions
        assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in topic["partitions"]), topic
    min_isr = {
        name: {entry[0]: entry[1] for entry in entries}["min.insync.replicas"]
        for response in configs
        for _code, _message, _type, name, entries in response.resources
    }
    assert min_isr == dict.fromkeys(topics, "2")
    ((*_, entries),) = broker[0].resources
    broker_config = {entry[0]: entry[1] for entry in entries}
    assert broker_config["offsets.topic.replication.factor"] == "3"
    assert broker_config["transaction.state.log.replication.factor"] == "3"
    assert broker_config["transaction.state.log.min.isr"] == "2"


async def test_produce_acks_all_and_consume(cluster: Settings, topics: list[str]) -> None:
    topic = topic_name(TRADES, cluster.kafka.topic_prefix)
    payloads = [uuid.uuid4().bytes for _ in range(20)]
    async with producer(cluster.kafka) as client:
        for payload in payloads:
            await client.send_and_wait(topic, payload, key=b"BTC/USD")
    group = f"{cluster.kafka.topic_prefix}reader"
    assert await read_values(cluster.kafka, topic, len(payloads), group=group) == payloads
    # The group's offsets went to the brokers' own topic, replicated like the project's.
    async with admin_client(cluster.kafka) as admin:
        (offsets,) = await admin.describe_topics(["__consumer_offsets"])
    assert {len(p["replicas"]) for p in offsets["partitions"]} == {3}


async def test_a_wrong_password_is_one_clear_line_fast(cluster: Settings) -> None:
    password = "not-the-password-" + uuid.uuid4().hex
    wrong = cluster.kafka.model_copy(update={"sasl_password": SecretStr(password)})
    started = time.monotonic()
    with pytest.raises(KafkaConnectError) as caught:
        await ensure_topics(wrong)
    message = str(caught.value)
    assert time.monotonic() - started < 15
    assert message == (
        f"kafka {wrong.bootstrap_servers}: SASL SCRAM-SHA-512 authentication failed for user "
        "'cryptopredict' (wrong username or password)"
    )
    assert "\n" not in message and password not in message
    # `stack status` shows the same reason in a node's detail column.
    node = KafkaNode(
        cluster.model_copy(update={"kafka": wrong}), StackPaths.from_settings(cluster), node_id=1
    )
    ok, detail = await node.probe()
    assert not ok and "authentication failed for user 'cryptopredict'" in detail, detail
    # A producer (the feed's) stops at once instead of waiting for the broker to change its mind.
    with pytest.raises(KafkaConnectError, match="authentication failed") as refused:
        await ReliablePublisher(wrong).start()
    assert refused.value.refused
    # A stream worker exits with that one line.
    env = os.environ | {
        "CRYPTOPREDICT_PROFILE": "cluster",
        "CRYPTOPREDICT_KAFKA__SASL_PASSWORD": password,
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": cluster.kafka.topic_prefix,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", "worker", env=env, stdout=PIPE, stderr=PIPE
    )
    _, stderr = await asyncio.wait_for(worker.communicate(), timeout=60)
    assert worker.returncode == 2
    assert stderr.decode().strip().splitlines()[-1] == f"stream worker: {message}"
    assert password not in stderr.decode()


async def test_a_single_broker_refuses_replication_3(settings: Settings) -> None:
    kafka = settings.kafka.model_copy(
        update={
            "replication_factor": 3,
            "min_insync_replicas": 2,
            "topic_prefix": topic_prefixes.run_prefix("rf3"),
        }
    )
    with pytest.raises(TopicCreationError) as caught:
        await ensure_topics(kafka)
    assert str(caught.value).startswith(
        f"kafka.replication_factor 3 is above the 1 broker(s) at {kafka.bootstrap_servers}"
    )
    assert not [t for t in await topic_names(kafka) if t.startswith(kafka.topic_prefix)]


async def test_a_killed_leader_is_replaced_and_rejoins(cluster: Settings, topics: list[str]) -> None:
    kafka = cluster.kafka
    topic = topic_name(TRADES, kafka.topic_prefix)
    async with admin_client(kafka) as admin:
        (described,) = await admin.describe_topics([topic])
    leader = next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    node = KafkaNode(cluster, StackPaths.from_settings(cluster), leader)
    pid = live_pid(node)
    assert pid is not None, f"kafka-{leader} is not running"

    async with producer(kafka) as client:
        await client.send_and_wait(topic, b"before", partition=0)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await client.send_and_wait(topic, b"after", partition=0)
        failover_s = time.monotonic() - killed
    assert failover_s < 20, f"produce took {failover_s:.1f} s after the leader died"
    values = await read_topic(kafka, topic, idle_s=2)
    assert values.count(b"before") == 1 and values.count(b"after") == 1

    started = time.monotonic()
    await asyncio.to_thread(stack.up, cluster, ["kafka"])
    rejoin_s = time.monotonic() - started
    assert live_pid(node) not in (None, pid)
    async with admin_client(kafka) as admin:
        assert sorted(b["node_id"] for b in (await admin.describe_cluster())["brokers"]) == [1, 2, 3]
        # The restarted node catches up and is back in the partition's in-sync replicas.
        async with asyncio.timeout(30):
            while True:
                (described,) = await admin.describe_topics([topic])
                isr = next(p["isr"] for p in described["partitions"] if p["partition"] == 0)
                if leader in isr:
                    break
                await asyncio.sleep(0.5)
    print(f"produce after kill -9 of leader kafka-{leader}: {failover_s:.1f} s; rejoined in {rejoin_s:.1f} s")
