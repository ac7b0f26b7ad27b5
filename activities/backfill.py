"""Backfill activity: a thin adapter from the BackfillWorkflow to cryptopredict.backfill, which pages
Kraken REST `Trades` into the `trades` topic. The activity heartbeats the progress after every page the
broker has acknowledged; a retried attempt resumes from the last heartbeat."""

from __future__ import annotations

import logging

from temporalio import activity

from cryptopredict import backfill
from cryptopredict.models.backfill import BackfillInput, BackfillProgress, TradePagesInput
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


class BackfillActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="publish_trade_pages")
    async def publish_trade_pages(self, request: TradePagesInput) -> BackfillProgress:
        """Publishes up to `request.max_pages` pages from `request.progress.since_ns` on."""
        info = activity.info()
        details = info.heartbeat_details  # a retry after a crash: continue where the last attempt got to
        progress = await backfill.publish_trade_pages(
            self.settings,
            request,
            lambda p: activity.heartbeat(p.model_dump(mode="json")),
            resumed=BackfillProgress.model_validate(details[0]) if details else None,
            retried=info.attempt > 1,
        )
        logger.info(
            "backfill of %s: %d pages, %d trades, done=%s",
            progress.pair,
            progress.pages,
            progress.trades_published,
            progress.done,
        )
        return progress

    # Serves the BackfillWorkflows started before publish_trade_pages existed: their histories schedule
    # this name with two arguments (workflows/backfill.py, patch "trade-pages-input"). Remove once no such
    # workflow runs.
    @activity.defn(name="backfill_trade_pages")
    async def backfill_trade_pages(
        self, request: BackfillInput, progress: BackfillProgress
    ) -> BackfillProgress:
        return await self.publish_trade_pages(TradePagesInput.of(request, progress))
