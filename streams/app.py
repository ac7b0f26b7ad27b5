"""The Faust app: `python -m streams worker -l info` (or `cryptopredict stream`).

Agents live in their own modules; importing this module only builds configuration (no I/O).
Topic values are raw JSON bytes validated by the pydantic models, never Faust Records or pickle.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import faust
from faust.types import RecordMetadata, TableT

from cryptopredict import metrics, topics
from cryptopredict.kafka_client import faust_credentials
from cryptopredict.models import Candle, DeadLetter
from cryptopredict.settings import get_settings

logger = logging.getLogger(__name__)

settings = get_settings()

prefix = settings.kafka.topic_prefix


def _topic(name: str) -> faust.TopicT:
    return app.topic(topics.topic_name(name, prefix), key_type=bytes, value_type=bytes)


app = faust.App(
    topics.topic_name(topics.FAUST_APP_ID, prefix),
    broker=[f"kafka://{server}" for server in settings.kafka.servers],
    broker_credentials=faust_credentials(settings.kafka),
    store="memory://",
    # Tables live in memory (rebuilt from changelogs); Faust still makes a data dir, so keep it out of the cwd.
    datadir=f"{tempfile.gettempdir()}/cryptopredict-faust-{{conf.name}}",
    value_serializer="raw",
    topic_partitions=settings.kafka.partitions,
    # Changelogs and repartition topics: replicated like the project's own topics.
    topic_replication_factor=settings.kafka.replication_factor,
    table_key_serializer="json",
    table_value_serializer="json",
    broker_session_timeout=settings.kafka.session_timeout_s,
    broker_rebalance_timeout=settings.kafka.rebalance_timeout_s,
    broker_heartbeat_interval=1.0,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    autodiscover=False,
    producer_acks=-1,
)

# Changelogs of the tables are compacted (Faust's default) in segments small enough to be cleaned while
# the worker runs: a restarted worker then recovers from about one record per key instead of replaying
# every update since the topic was made (hundreds of MB after a backfill, and Faust may drop records it
# fetched while recovering, faust-streaming #596, so a long recovery means more restarts).
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(8 * 1024 * 1024),
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
    **settings.kafka.topic_config,
}


def state_table(name: str) -> TableT:
    """A table of JSON state per key, changelogged, one partition per input partition."""
    return app.Table(
        name, default=None, partitions=settings.kafka.partitions, extra_topic_configs=CHANGELOG_CONFIG
    )


candle_ticks_topic = _topic(topics.CANDLE_TICKS)
candles_topic = _topic(topics.CANDLES)
predictions_topic = _topic(topics.PREDICTIONS)
prediction_refusals_topic = _topic(topics.PREDICTION_REFUSALS)
dead_letters_topic = _topic(topics.DEAD_LETTERS)
late_trades_topic = _topic(topics.LATE_TRADES)
indicators_topic = _topic(topics.TECHNICAL_INDICATORS)
model_events_topic = _topic(topics.MODEL_EVENTS)
# One channel for trades and idle ticks: both are keyed by pair and change the same candle state.
candle_input = app.topic(
    topics.topic_name(topics.TRADES, prefix),
    topics.topic_name(topics.CANDLE_TICKS, prefix),
    key_type=bytes,
    value_type=bytes,
)


# Called with each closed candle as the candle builder sends it, by agents of this worker that would
# rather not wait for it to come back from Kafka (streams.ahead).
candle_listeners: list[Callable[[Candle], None]] = []


def load_agents() -> None:
    """Registers every agent with the app (imported lazily to avoid an import cycle)."""
    from streams import candle_builder, indicator_agent, lag_monitor, prediction_agent, store_sink  # noqa: F401


async def dead_letter(
    source: str, raw: bytes, reason: str, topic: faust.TopicT | None = None
) -> Awaitable[RecordMetadata]:
    """Keeps rejected input on the dead-letter topic (or `topic`) and logs it; the stream goes on.
    Returns the send's future, for a caller that must know the broker has it."""
    logger.warning("dead letter from %s: %s", source, reason)
    metrics.DEAD_LETTERS.labels(source, metrics.reason_kind(reason)).inc()
    letter = DeadLetter(
        source=source, reason=reason, raw=(raw or b"").decode("utf-8", "replace"), at=datetime.now(UTC)
    )
    return await (topic or dead_letters_topic).send(value=letter.to_json_bytes())
