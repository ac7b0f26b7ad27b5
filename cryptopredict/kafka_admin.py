"""Creates the project's topics (under the configured prefix) before anything reads or writes them.

A consumer that subscribes before its topic exists is not rebalanced onto it later, so every process
that consumes (the Faust worker, the gRPC server) ensures the topics first.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cryptopredict.settings import KafkaSettings
from cryptopredict.topics import ALL_TOPICS, topic_name

logger = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


class TopicCreationError(RuntimeError):
    pass


async def ensure_topics(kafka: KafkaSettings) -> list[str]:
    """Creates missing topics; returns the names created. Safe to call concurrently."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        wanted = [topic_name(t, kafka.topic_prefix) for t in ALL_TOPICS]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            logger.info("creating topics %s", ", ".join(missing))
            new = [NewTopic(t, num_partitions=kafka.partitions, replication_factor=1) for t in missing]
            _raise_topic_errors(await admin.create_topics(new))
        return missing
    finally:
        await admin.close()


def _raise_topic_errors(response: Any) -> None:
    # TOPIC_ALREADY_EXISTS means another process won the race, which is fine.
    errors = [
        (topic, code, msg)
        for topic, code, msg in (tuple(err[:3]) for err in getattr(response, "topic_errors", []))
        if code not in (0, TOPIC_ALREADY_EXISTS)
    ]
    if errors:
        raise TopicCreationError(f"topic creation failed: {errors}")


async def topic_message_count(kafka: KafkaSettings, topic: str) -> int:
    """Messages ever written to a topic: the sum of its partitions' end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
    # Assigned, not subscribed: a consumer without a group stops cleanly and commits nothing.
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        return int(sum((await consumer.end_offsets(partitions)).values()))
    finally:
        await consumer.stop()
