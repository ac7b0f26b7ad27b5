"""A Kafka producer that does not lose acknowledged data, and does not drop data a broker refused.

acks=all with idempotence, so retries inside the client neither lose nor duplicate records. If the
broker stays away longer than the client's own retries, the failed records are sent again, in their
original order, until they are acknowledged: a briefly missing broker costs time, never trades.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cryptopredict.kafka_client import client_kwargs
from cryptopredict.settings import KafkaSettings

logger = logging.getLogger(__name__)


@dataclass
class _Record:
    topic: str
    value: bytes
    key: bytes | None
    context: Any
    future: asyncio.Future[Any] | None = None


class ReliablePublisher:
    def __init__(
        self,
        kafka: KafkaSettings,
        max_in_flight: int = 20_000,
        on_ack: Callable[[Any, float], None] | None = None,
        retry_backoff_s: float = 0.5,
        max_retry_backoff_s: float = 10.0,
    ) -> None:
        self.kafka = kafka
        self.max_in_flight = max_in_flight
        self.on_ack = on_ack
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        self.acknowledged = 0
        self.resent = 0
        self._pending: deque[_Record] = deque()
        self._producer = self._new_producer()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_kwargs(self.kafka),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        """Starts the producer, waiting for brokers that are away; a broker that refuses this client
        (credentials, certificates) ends the start with KafkaConnectError, since waiting cannot help."""
        from cryptopredict.kafka_admin import KafkaConnectError, check_connection

        try:
            await self._producer.start()
            return
        except KafkaError:
            try:
                await check_connection(self.kafka)
            except KafkaConnectError as exc:
                if exc.refused:
                    await self._producer.stop()
                    raise
        await self._retrying(self._producer.start, "start")

    async def stop(self) -> None:
        await self.flush()
        await self._producer.stop()

    async def publish(self, topic: str, value: bytes, key: bytes | None = None, context: Any = None) -> None:
        record = _Record(topic, value, key, context)
        await self._send(record)
        self._pending.append(record)
        while self._pending and self._pending[0].future is not None and self._pending[0].future.done():
            await self._settle(self._pending.popleft())
        if len(self._pending) >= self.max_in_flight:
            await self._settle(self._pending.popleft())

    async def flush(self) -> None:
        while self._pending:
            await self._settle(self._pending.popleft())

    async def _send(self, record: _Record) -> None:
        async def send() -> None:
            record.future = await self._producer.send(record.topic, record.value, key=record.key)
            if self.on_ack is not None:
                record.future.add_done_callback(
                    lambda f: None if f.cancelled() or f.exception() else self._acked(record)
                )

        await self._retrying(send, f"send to {record.topic}")

    def _acked(self, record: _Record) -> None:
        assert self.on_ack is not None
        self.on_ack(record.context, time.monotonic())

    async def _settle(self, record: _Record) -> None:
        """Waits for the record's acknowledgement, sending it again until the broker takes it."""
        while True:
            assert record.future is not None
            try:
                await record.future
                self.acknowledged += 1
                return
            except KafkaError as exc:
                self.resent += 1
                logger.warning("record to %s not acknowledged (%s); sending it again", record.topic, exc)
                await self._send(record)

    async def _retrying(self, action: Callable[[], Any], what: str) -> None:
        delay = self.retry_backoff_s
        while True:
            try:
                await action()
                return
            except KafkaError as exc:
                logger.warning("kafka %s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_backoff_s)


async def publish_records(kafka: KafkaSettings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Publishes (key, value) records to `topic` with a publisher of its own; returns once the broker has
    acknowledged every one (for the occasional record of an activity or a command, not for a stream)."""
    publisher = ReliablePublisher(kafka)
    await publisher.start()
    try:
        for key, value in records:
            await publisher.publish(topic, value, key=key)
    finally:
        await publisher.stop()  # flushes: every record acknowledged
