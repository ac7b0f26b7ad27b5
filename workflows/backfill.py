"""BackfillWorkflow(pair, start, end): history from Kraken REST into the live `trades` topic.

The workflow loops over activity calls of a few pages each, so progress lives in its state (query
`progress`, also visible in the Temporal UI), and continues as new to keep its history short.
    temporal workflow start --type BackfillWorkflow --task-queue training --workflow-id backfill-BTCUSD \
        --input '{"pair": "BTC/USD", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.backfill import BackfillActivities
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
    from cryptopredict.kraken.rest import to_ns
    from cryptopredict.models.backfill import BackfillInput, BackfillProgress, TradePagesInput

# Continue as new after this many activity calls, so a long backfill keeps a short history.
CALLS_PER_RUN = 200
# Runs that recorded this marker call publish_trade_pages with one TradePagesInput; the runs started before
# it (their histories have no marker) keep calling backfill_trade_pages with (request, progress).
TRADE_PAGES_INPUT = "trade-pages-input"


@workflow.defn(name=workflow_types.BACKFILL)
class BackfillWorkflow:
    def __init__(self) -> None:
        self._progress: BackfillProgress | None = None

    @workflow.query(name="progress")
    def progress(self) -> BackfillProgress | None:
        return self._progress

    @workflow.run
    async def run(self, request: BackfillInput) -> BackfillProgress:
        progress = request.resume or BackfillProgress(
            pair=request.pair, since_ns=to_ns(request.start), end_ns=to_ns(request.end)
        )
        self._progress = progress
        one_input = workflow.patched(TRADE_PAGES_INPUT)
        for _ in range(CALLS_PER_RUN):
            progress = await self._pages(request, progress, one_input)
            self._progress = progress
            if progress.done:
                workflow.logger.info(
                    "backfill of %s done: %d trades", request.pair, progress.trades_published
                )
                return progress
        workflow.continue_as_new(request.model_copy(update={"resume": progress}))

    async def _pages(
        self, request: BackfillInput, progress: BackfillProgress, one_input: bool
    ) -> BackfillProgress:
        pages: Callable[..., Awaitable[BackfillProgress]] = BackfillActivities.publish_trade_pages
        args: list[Any] = [TradePagesInput.of(request, progress)]
        if not one_input:  # a run started before the patch
            pages, args = BackfillActivities.backfill_trade_pages, [request, progress]
        return await workflow.execute_activity_method(
            pages,
            args=args,
            **policies.BACKFILL_BATCH(),
        )
