"""Records to the project's topics from a long-lived process (a worker): the topics are made sure of at its
first write, the prefix of settings.kafka applied to every base name."""

from __future__ import annotations

from collections.abc import Sequence

from cryptopredict import topics
from cryptopredict.kafka_admin import ensure_topics
from cryptopredict.publisher import publish_records
from cryptopredict.settings import KafkaSettings


class TopicWriter:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._topics_ready = False

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """(key, value) records on the topic of base name `topic` (cryptopredict.topics)."""
        if not self._topics_ready:
            await ensure_topics(self.kafka)
            self._topics_ready = True
        await publish_records(self.kafka, topics.topic_name(topic, self.kafka.topic_prefix), records)
