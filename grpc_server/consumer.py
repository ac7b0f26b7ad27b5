"""Feeds the hub from Kafka: topic `predictions` (JSON of `Prediction`) in, `PredictionHub.publish` out."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from cryptopredict.kafka_admin import ensure_topics
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.models.ml import Prediction
from cryptopredict.settings import KafkaSettings
from cryptopredict.topics import PREDICTIONS, topic_name
from grpc_server.hub import PredictionHub

logger = logging.getLogger(__name__)

RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


class PredictionConsumer:
    """Consumes topic `predictions` into a hub; invalid messages are logged and counted, never fatal."""

    def __init__(self, hub: PredictionHub, kafka: KafkaSettings, topic: str | None = None) -> None:
        self.hub = hub
        self.kafka = kafka
        self.topic = topic or topic_name(PREDICTIONS, kafka.topic_prefix)
        self.consumed = 0
        self.invalid = 0

    def handle(self, value: bytes | None) -> Prediction | None:
        try:
            prediction = Prediction.model_validate_json(value or b"")
        except ValidationError as exc:
            self.invalid += 1
            logger.warning("invalid prediction on %s (%d so far): %s", self.topic, self.invalid, exc)
            return None
        self.consumed += 1
        self.hub.publish(prediction)
        return prediction

    async def run(self) -> None:
        """Consume until cancelled; a broker outage is retried with backoff, since it passes with time."""
        delay = RETRY_MIN_S
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                logger.warning("kafka unavailable (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _consume(self) -> None:
        # Subscribing to a topic that does not exist yet would leave this consumer idle.
        await ensure_topics(self.kafka)
        consumer = AIOKafkaConsumer(
            self.topic,
            **client_kwargs(self.kafka),
            # No consumer group: every server replica must see every partition, and reading from the
            # earliest offset rebuilds the latest prediction per key after a restart.
            group_id=None,
            auto_offset_reset="earliest",
        )
        try:
            # Inside try: a failed start leaves connections that only stop() closes.
            await consumer.start()
            logger.info("consuming %s from %s", self.topic, self.kafka.bootstrap_servers)
            async for record in consumer:
                self.handle(record.value)
        finally:
            await consumer.stop()
