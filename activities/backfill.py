"""Backfill activity: pages Kraken REST `Trades` and publishes them to `trades`, the live feed's topic,
so history goes through the same candle and indicator code as live data.

Progress is heartbeated after every page the broker has acknowledged. A retried attempt (the worker was
killed) resumes from the last heartbeat and skips the trades the killed attempt published after it, so
nothing is published twice.
"""

from __future__ import annotations

import logging

from temporalio import activity

from cryptopredict import topics
from cryptopredict.kafka_admin import last_trade_in_topic
from cryptopredict.kraken.rest import KrakenRestClient
from cryptopredict.models import trade_batches
from cryptopredict.models.backfill import BackfillInput, BackfillProgress
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


class BackfillActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="backfill_trade_pages")
    async def backfill_trade_pages(
        self, request: BackfillInput, progress: BackfillProgress
    ) -> BackfillProgress:
        """Publishes up to `request.pages_per_activity` pages from `progress.since_ns` on."""
        topic = topics.topic_name(topics.TRADES, self.settings.kafka.topic_prefix)
        details = activity.info().heartbeat_details
        already_published = progress.last_trade_id
        if details:  # a retry after a crash: continue where the last attempt got to
            progress = BackfillProgress.model_validate(details[0])
        if activity.info().attempt > 1:
            # A killed attempt may have published pages after its last heartbeat reached the server (or
            # before its first): the topic itself says what is already there.
            newest = await last_trade_in_topic(self.settings.kafka, topic, progress.pair, progress.end_ns)
            already_published = newest.trade_id if newest is not None else already_published
            logger.info(
                "resuming backfill of %s at since=%d after trade %s",
                progress.pair,
                progress.since_ns,
                already_published,
            )
        rest = KrakenRestClient(
            request.rest_url or self.settings.kraken.rest_url,
            min_interval_s=self.settings.kraken.rest_min_interval_s,
        )
        publisher = ReliablePublisher(self.settings.kafka)
        await publisher.start()
        try:
            pages = 0
            async for trades, last in rest.trades_since(progress.pair, progress.since_ns, progress.end_ns):
                new = [t for t in trades if already_published is None or t.trade_id > already_published]
                for batch in trade_batches(new):
                    await publisher.publish(topic, batch.to_json_bytes(), key=batch.pair.encode())
                await publisher.flush()
                pages += 1
                progress = progress.model_copy(
                    update={
                        "since_ns": max(last, progress.since_ns),
                        "pages": progress.pages + 1,
                        "trades_published": progress.trades_published + len(trades),
                        "last_trade_id": trades[-1].trade_id if trades else progress.last_trade_id,
                        "done": not trades or last >= progress.end_ns,
                    }
                )
                activity.heartbeat(progress.model_dump(mode="json"))
                if progress.done or pages >= request.pages_per_activity:
                    break
            else:
                progress = progress.model_copy(update={"done": True})
            return progress
        finally:
            await publisher.stop()
            await rest.aclose()
