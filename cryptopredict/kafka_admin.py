"""Creates the project's topics (under the configured prefix) before anything reads or writes them.

A consumer that subscribes before its topic exists is not rebalanced onto it later, so every process
that consumes (the Faust worker, the gRPC server) ensures the topics first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from cryptopredict.kafka_client import client_kwargs
from cryptopredict.models import Trade, TradeBatch
from cryptopredict.settings import KafkaSettings
from cryptopredict.topics import ALL_TOPICS, topic_name

logger = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


class TopicCreationError(RuntimeError):
    pass


class KafkaConnectError(ConnectionError):
    """No broker of `bootstrap_servers` accepts this client; the message is one line naming the endpoint
    and the reason (refused, untrusted certificate, wrong password), never a secret. `refused` is true
    when a broker answered and turned the client away (credentials, certificates): waiting will not help."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


async def check_connection(kafka: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Connects to each bootstrap server in turn (TCP, TLS, SASL, one metadata request) until one serves
    this client; raises KafkaConnectError saying why none did. Processes call it at start (and the admin
    client after a failed bootstrap) so a bad setting ends them with that line, not a retry loop."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    kwargs = client_kwargs(kafka)
    del kwargs["bootstrap_servers"]
    reasons: dict[str, str] = {}
    refused = False
    for server in kafka.servers:
        host, _, port = server.rpartition(":")
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs)
                # A SASL listener answers a TLS-only client's ApiVersions, then drops it at the first request.
                await conn.send(MetadataRequest([]))
            return
        except (OSError, KafkaError, TimeoutError, ValueError) as exc:
            reasons[server] = connect_failure_reason(exc, kafka)
            refused = refused or refuses_this_client(exc)
        finally:
            if conn is not None:
                conn.close()
    if len(set(reasons.values())) == 1:
        raise KafkaConnectError(f"kafka {kafka.bootstrap_servers}: {next(iter(reasons.values()))}", refused)
    raise KafkaConnectError(
        "; ".join(f"kafka {server}: {reason}" for server, reason in reasons.items()), refused
    )


def refuses_this_client(exc: BaseException) -> bool:
    """A broker that answered and refused these credentials or certificates (not one that is away)."""
    import ssl

    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    return isinstance(exc, SaslAuthenticationFailed | UnsupportedSaslMechanismError | ssl.SSLError)


def connect_failure_reason(exc: BaseException, kafka: KafkaSettings) -> str:
    """Why a connection to a broker failed, in words a person can act on."""
    import ssl

    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"SASL {kafka.sasl_mechanism} authentication failed for user {kafka.sasl_username!r} "
            "(wrong username or password)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"the broker refuses SASL {kafka.sasl_mechanism}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = kafka.ssl_ca_file or "the system's roots"
        return f"TLS certificate not trusted ({exc.verify_message}; CA: {ca})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}): is the listener {kafka.security_protocol}?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no broker listening)"
    if isinstance(exc, TimeoutError):
        return "no answer in time (a listener of another protocol, or a hung broker?)"
    if isinstance(exc, KafkaConnectionError | ConnectionResetError | BrokenPipeError):
        # What a broker does to a client of another protocol (TLS to a plaintext listener and back).
        return f"the broker closed the connection: is its listener {kafka.security_protocol}?"
    return f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def admin_client(
    kafka: KafkaSettings, request_timeout_ms: int = 10_000
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; KafkaConnectError says why when a broker refuses this client, and a broker
    that is away raises aiokafka's KafkaConnectionError (a KafkaError, retried by the callers)."""
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=request_timeout_ms)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        # aiokafka only says "Unable to bootstrap": one direct connection finds the reason. A broker that
        # refused this client is final; one that is away is the caller's to wait for, as before.
        try:
            await check_connection(kafka)
        except KafkaConnectError as exc:
            if exc.refused:
                raise
        raise
    try:
        yield admin
    finally:
        await admin.close()


async def broker_count(admin: AIOKafkaAdminClient) -> int:
    """Brokers registered (alive) in the cluster."""
    return len((await admin.describe_cluster())["brokers"])


async def ensure_topics(kafka: KafkaSettings) -> list[str]:
    """Creates missing topics with the configured replication factor and topic config; returns the names
    created. Safe to call concurrently."""
    async with admin_client(kafka) as admin:
        wanted = [topic_name(t, kafka.topic_prefix) for t in ALL_TOPICS]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # Checked only when creating: existing topics keep working while one broker of several is down.
            brokers = await broker_count(admin)
            if kafka.replication_factor > brokers:
                raise TopicCreationError(
                    replication_refusal(kafka.replication_factor, brokers, kafka.bootstrap_servers)
                )
            logger.info("creating topics %s", ", ".join(missing))
            new = [
                NewTopic(
                    t,
                    num_partitions=kafka.partitions,
                    replication_factor=kafka.replication_factor,
                    topic_configs=kafka.topic_config,
                )
                for t in missing
            ]
            _raise_topic_errors(await admin.create_topics(new))
            await _wait_for_leaders(admin, missing)
        return missing


def replication_refusal(replication_factor: int, brokers: int, bootstrap_servers: str) -> str:
    return (
        f"kafka.replication_factor {replication_factor} is above the {brokers} broker(s) at "
        f"{bootstrap_servers}: topics cannot be created"
    )


async def topic_names(kafka: KafkaSettings) -> set[str]:
    async with admin_client(kafka) as admin:
        return set(await admin.list_topics())


async def delete_topics(kafka: KafkaSettings, names: list[str], batch: int = 200) -> None:
    async with admin_client(kafka, request_timeout_ms=30_000) as admin:
        for start in range(0, len(names), batch):
            await admin.delete_topics(names[start : start + batch], timeout_ms=30_000)


async def delete_topics_under(kafka: KafkaSettings, prefixes: tuple[str, ...]) -> None:
    """Deletes every topic whose name starts with one of `prefixes` (a run's own and its Faust app's).
    Left behind, such topics pile up on the broker: its heap fills with their
    partitions, and it collects more often and for longer on every later hop."""
    await delete_topics(kafka, sorted(t for t in await topic_names(kafka) if t.startswith(prefixes)))


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 10.0) -> None:
    """New partitions take a moment to elect a leader; writers that start earlier get errors and retry."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(p["leader"] >= 0 for topic in described for p in topic["partitions"]):
            return
        await asyncio.sleep(0.1)


def _raise_topic_errors(response: Any) -> None:
    # TOPIC_ALREADY_EXISTS means another process won the race, which is fine.
    errors = [
        (topic, code, msg)
        for topic, code, msg in (tuple(err[:3]) for err in getattr(response, "topic_errors", []))
        if code not in (0, TOPIC_ALREADY_EXISTS)
    ]
    if errors:
        raise TopicCreationError(f"topic creation failed: {errors}")


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself


async def ensure_topic_config(kafka: KafkaSettings, names: list[str], config: dict[str, str]) -> list[str]:
    """Sets `config` on those of the existing topics `names` that lack it, keeping the other settings made
    on each topic (AlterConfigs replaces a topic's whole set); returns the names changed. Topics that do
    not exist yet are left to whoever creates them."""
    async with admin_client(kafka) as admin:
        topics = set(await admin.list_topics())
        existing = [name for name in names if name in topics]
        if not existing:
            return []
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in existing]
        changed = []
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries in response.resources:
                current = {entry[0]: entry[1] for entry in entries if _set_on_topic(entry[3])}
                if any(current.get(key) != value for key, value in config.items()):
                    changed.append(ConfigResource(ConfigResourceType.TOPIC, name, current | config))
        if changed:
            logger.info("setting %s on topics %s", config, ", ".join(r.name for r in changed))
            for response in await admin.alter_configs(changed):
                errors = [(name, code, msg) for code, msg, _type, name in response.resources if code != 0]
                if errors:
                    raise TopicCreationError(f"topic configuration failed: {errors}")
        return [r.name for r in changed]


def _set_on_topic(flag: bool | int) -> bool:
    """DescribeConfigs v0 says `is_default` (a bool), later versions the config's source."""
    return not flag if isinstance(flag, bool) else flag == DYNAMIC_TOPIC_CONFIG


async def partition_numbers(kafka: KafkaSettings, topic: str) -> list[int]:
    async with admin_client(kafka) as admin:
        (description,) = await admin.describe_topics([topic])
    return sorted(p["partition"] for p in description["partitions"])


async def topic_message_count(kafka: KafkaSettings, topic: str) -> int:
    """Messages ever written to a topic: the sum of its partitions' end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = [TopicPartition(topic, p) for p in await partition_numbers(kafka, topic)]
    # Assigned, not subscribed: a consumer without a group stops cleanly and commits nothing.
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        return int(sum((await consumer.end_offsets(partitions)).values()))
    finally:
        await consumer.stop()


async def last_trade_in_topic(
    kafka: KafkaSettings, topic: str, pair: str, before_ns: int | None = None, tail: int = 2000
) -> Trade | None:
    """The trade of `pair` with the highest trade_id among the last `tail` records of its partition
    (only trades before `before_ns` when given), or None.

    Lets a restarted writer continue exactly where the topic ends: the feed fills the gap since its last
    trade, and a resumed backfill skips what a killed attempt published after its last checkpoint.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.partitioner import DefaultPartitioner

    partitions = await partition_numbers(kafka, topic)
    if not partitions:
        return None  # no such topic yet
    # The producer's own partitioner, so this is the partition the pair's trades went to.
    partition = TopicPartition(topic, DefaultPartitioner()(pair.encode(), partitions, partitions))
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        consumer.seek(partition, max(0, end - tail))
        best: Trade | None = None
        while await consumer.position(partition) < end:
            for records in (await consumer.getmany(partition, timeout_ms=1000)).values():
                for record in records:
                    if record.key != pair.encode():
                        continue
                    for trade in TradeBatch.model_validate_json(record.value).trades:
                        if before_ns is not None and trade.timestamp.timestamp() * 1e9 >= before_ns:
                            continue
                        if best is None or trade.trade_id > best.trade_id:
                            best = trade
        return best
    finally:
        await consumer.stop()


async def read_topic(kafka: KafkaSettings, topic: str, idle_s: float = 3.0) -> list[bytes]:
    """Every record value of a topic from the start, until nothing new arrives for `idle_s`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle_s:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    return values


async def consumer_lag(kafka: KafkaSettings, group: str) -> dict[tuple[str, int], int]:
    """Records behind the end of each partition the consumer group has committed offsets for."""
    from aiokafka import AIOKafkaConsumer

    async with admin_client(kafka) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    committed = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    if not committed:
        return {}
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(committed))
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): max(0, ends[tp] - offset) for tp, offset in committed.items()}
