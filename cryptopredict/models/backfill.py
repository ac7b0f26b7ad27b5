"""Inputs, progress and results of the history backfill workflow."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cryptopredict.models.base import UtcDatetime


class BackfillProgress(BaseModel):
    """Where the backfill stands: the next `since` (ns) to ask for and what has been published."""

    pair: str
    since_ns: int
    end_ns: int
    pages: int = 0
    trades_published: int = 0
    last_trade_id: int | None = None
    done: bool = False


class BackfillInput(BaseModel):
    pair: str = Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")
    start: UtcDatetime
    end: UtcDatetime
    # None: settings.kraken.rest_url (the replay exchange's URL in tests and the demo).
    rest_url: str | None = None
    pages_per_activity: int = Field(default=20, gt=0)
    # Set when the workflow continues as new, so the next run starts where the last one stopped.
    resume: BackfillProgress | None = None
