"""Inputs, progress and results of the history backfill workflow and its activity."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from cryptopredict.models.base import UtcDatetime
from cryptopredict.models.market import Trade


class BackfillProgress(BaseModel):
    """Where the backfill stands: the next `since` (ns) to ask for and what has been published."""

    pair: str
    since_ns: int
    end_ns: int
    pages: int = 0
    trades_published: int = 0
    last_trade_id: int | None = None
    done: bool = False

    def after_page(self, trades: Sequence[Trade], next_since_ns: int) -> BackfillProgress:
        """The progress once the page `trades` (Kraken's `last` for the next page: `next_since_ns`) is
        published; done at an empty page or one that reaches the end of the range."""
        return self.model_copy(
            update={
                "since_ns": max(next_since_ns, self.since_ns),
                "pages": self.pages + 1,
                "trades_published": self.trades_published + len(trades),
                "last_trade_id": trades[-1].trade_id if trades else self.last_trade_id,
                "done": not trades or next_since_ns >= self.end_ns,
            }
        )


class BackfillInput(BaseModel):
    pair: str = Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")
    start: UtcDatetime
    end: UtcDatetime
    # None: settings.kraken.rest_url (the replay exchange's URL in tests and the demo).
    rest_url: str | None = None
    pages_per_activity: int = Field(default=20, gt=0)
    # Set when the workflow continues as new, so the next run starts where the last one stopped.
    resume: BackfillProgress | None = None


class TradePagesInput(BaseModel):
    """One call of the backfill's activity: up to `max_pages` pages of trades from `progress` on."""

    progress: BackfillProgress
    # None: settings.kraken.rest_url.
    rest_url: str | None = None
    max_pages: int = Field(default=20, gt=0)

    @classmethod
    def of(cls, request: BackfillInput, progress: BackfillProgress) -> TradePagesInput:
        return cls(progress=progress, rest_url=request.rest_url, max_pages=request.pages_per_activity)
