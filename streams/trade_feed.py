"""Trade feed: Kraken WebSocket v2 (or the replay exchange) -> topic `trades`, keyed by pair.

Rejected messages go to `dead_letters` with the raw payload and the reason.
Run: `cryptopredict feed [--url ws://...]`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from cryptopredict import topics
from cryptopredict.kraken.client import KrakenTradeClient, Rejected
from cryptopredict.models import DeadLetter
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


def reliable_producer(settings: Settings) -> AIOKafkaProducer:
    # acks=all with idempotence: an acknowledged trade is never lost or written twice by retries.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )


async def run_feed(
    settings: Settings, url: str | None = None, max_trades: int | None = None
) -> dict[str, int]:
    client = KrakenTradeClient(url or settings.kraken.ws_url, settings.kraken.pairs)
    producer = reliable_producer(settings)
    await producer.start()
    trades_topic = topics.topic_name(topics.TRADES, settings.kafka.topic_prefix)
    dead_letter_topic = topics.topic_name(topics.DEAD_LETTERS, settings.kafka.topic_prefix)
    counts = {"trades": 0, "rejected": 0}
    try:
        async for event in client.events():
            if isinstance(event, Rejected):
                counts["rejected"] += 1
                logger.warning("rejected exchange message: %s", event.reason)
                letter = DeadLetter(
                    source="trade_feed", reason=event.reason, raw=event.raw, at=datetime.now(UTC)
                )
                await producer.send(dead_letter_topic, letter.to_json_bytes())
                continue
            await producer.send(trades_topic, event.to_json_bytes(), key=event.pair.encode())
            counts["trades"] += 1
            if counts["trades"] % 1000 == 0:
                logger.info("published %d trades", counts["trades"])
            if max_trades is not None and counts["trades"] >= max_trades:
                break
    finally:
        await producer.stop()
    return counts
