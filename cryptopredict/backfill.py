"""History from Kraken REST `Trades` into `trades`, the live feed's topic, so it goes through the same candle
and indicator code as live data: what one call of the BackfillWorkflow's activity does.

Progress is checkpointed (the activity heartbeats it) after every page the broker has acknowledged. A
retried attempt (the worker was killed) resumes from the last checkpoint and skips the trades the killed
attempt published after it, so nothing is published twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from cryptopredict import topics
from cryptopredict.kafka_admin import last_trade_in_topic
from cryptopredict.kraken.rest import KrakenRestClient
from cryptopredict.models import Trade, trade_batches
from cryptopredict.models.backfill import BackfillProgress, TradePagesInput
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)

# Called with the progress after every published page (the activity heartbeats it).
Checkpoint = Callable[[BackfillProgress], None]


def unpublished(trades: Sequence[Trade], published_upto: int | None) -> list[Trade]:
    """The trades after the newest trade id already in the topic (None: nothing is)."""
    return [t for t in trades if published_upto is None or t.trade_id > published_upto]


async def publish_pages(
    pages: AsyncIterator[tuple[list[Trade], int]],
    publish: Callable[[list[Trade]], Awaitable[None]],
    progress: BackfillProgress,
    published_upto: int | None,
    max_pages: int,
    checkpoint: Checkpoint,
) -> BackfillProgress:
    """Publishes the trades of each page of `pages` ((trades, next since) from `progress.since_ns`, as
    KrakenRestClient.trades_since yields them) that are not in the topic yet, and checkpoints after each;
    stops at the end of the range or after `max_pages` pages. Returns the progress after the last page,
    done when the source ran out."""
    count = 0
    async for trades, next_since_ns in pages:
        await publish(unpublished(trades, published_upto))
        count += 1
        progress = progress.after_page(trades, next_since_ns)
        checkpoint(progress)
        if progress.done or count >= max_pages:
            return progress
    return progress.model_copy(update={"done": True})


async def publish_trade_pages(
    settings: Settings,
    request: TradePagesInput,
    checkpoint: Checkpoint,
    *,
    resumed: BackfillProgress | None = None,
    retried: bool = False,
) -> BackfillProgress:
    """Publishes up to `request.max_pages` pages from `request.progress`, or from `resumed` (the last
    checkpoint of a killed attempt). A retried attempt may follow one that published pages after its last
    checkpoint reached the server (or before its first): the topic itself says what is already there."""
    topic = topics.topic_name(topics.TRADES, settings.kafka.topic_prefix)
    progress = resumed or request.progress
    published_upto = request.progress.last_trade_id
    if retried:
        newest = await last_trade_in_topic(settings.kafka, topic, progress.pair, progress.end_ns)
        published_upto = newest.trade_id if newest is not None else published_upto
        logger.info(
            "resuming backfill of %s at since=%d after trade %s",
            progress.pair,
            progress.since_ns,
            published_upto,
        )
    rest = KrakenRestClient(
        request.rest_url or settings.kraken.rest_url, min_interval_s=settings.kraken.rest_min_interval_s
    )
    publisher = ReliablePublisher(settings.kafka)

    async def publish(trades: list[Trade]) -> None:
        for batch in trade_batches(trades):
            await publisher.publish(topic, batch.to_json_bytes(), key=batch.pair.encode())
        await publisher.flush()  # acknowledged before the checkpoint

    await publisher.start()
    try:
        pages = rest.trades_since(progress.pair, progress.since_ns, progress.end_ns)
        return await publish_pages(pages, publish, progress, published_upto, request.max_pages, checkpoint)
    finally:
        await publisher.stop()
        await rest.aclose()
