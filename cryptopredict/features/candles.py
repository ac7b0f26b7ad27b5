"""Event-time tumbling candles for one (pair, interval): trades in, closed candles out.

Windows are aligned on the exchange timestamp, never on Kafka's. A window closes when the event-time
watermark (newest trade seen) passes its end plus a grace period, or when the idle check estimates
that it has (a quiet market must still close candles). Windows that saw no trade become gap candles,
so a missing minute is recorded instead of silently skipped.

`CandleState` is plain JSON-serialisable data so a Faust table (JSON codec) can hold it.
"""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from cryptopredict.models import Candle, Trade
from cryptopredict.topics import split_market

TradeOutcome = Literal["accepted", "late", "duplicate"]


def window_start(ts: datetime, interval_s: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_s, tz=UTC)


def in_runs(runs: list[list[int]], value: int) -> bool:
    """Whether `value` is in sorted, disjoint [first, last] runs."""
    index = bisect.bisect_right(runs, [value, math.inf])
    return index > 0 and runs[index - 1][0] <= value <= runs[index - 1][1]


def add_to_runs(runs: list[list[int]], value: int) -> bool:
    """Adds `value` to sorted, disjoint [first, last] runs in place; False if it was already there."""
    if in_runs(runs, value):
        return False
    index = bisect.bisect_right(runs, [value, math.inf])  # first run starting after value
    joins_left = index > 0 and runs[index - 1][1] == value - 1
    joins_right = index < len(runs) and runs[index][0] == value + 1
    if joins_left and joins_right:
        runs[index - 1][1] = runs[index][1]
        del runs[index]
    elif joins_left:
        runs[index - 1][1] = value
    elif joins_right:
        runs[index][0] = value
    else:
        runs.insert(index, [value, value])
    return True


def merge_runs(runs: list[list[int]], more: list[list[int]], keep: int) -> list[list[int]]:
    """The union of two run lists as sorted, disjoint runs (adjacent ones joined), the newest `keep` of them."""
    merged: list[list[int]] = []
    for first, last in sorted(runs + more):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged[-keep:]


# Trade-id runs of closed windows kept per state, to tell a replayed trade from a late one. An exchange's
# ids are consecutive, so this is one run plus one per genuinely late trade; the oldest go first.
CLOSED_RUNS_KEPT = 64


class OpenWindow(BaseModel):
    """Running aggregate of one window. Open and close are the first and last trade by
    (timestamp, trade_id), so trades arriving out of order inside the window do not change them."""

    start: datetime
    open: float
    open_key: tuple[datetime, int]
    high: float
    low: float
    close: float
    close_key: tuple[datetime, int]
    volume: float
    notional: float
    trade_count: int
    first_trade_id: int
    last_trade_id: int
    # Ids seen in this window as sorted [first, last] runs (an exchange's ids are consecutive, so this
    # is one run): a redelivered or re-published trade must not count twice.
    trade_id_runs: list[list[int]] = Field(default_factory=list)

    @classmethod
    def first(cls, start: datetime, trade: Trade) -> OpenWindow:
        key = (trade.timestamp, trade.trade_id)
        return cls(
            start=start,
            open=trade.price,
            open_key=key,
            high=trade.price,
            low=trade.price,
            close=trade.price,
            close_key=key,
            volume=trade.qty,
            notional=trade.price * trade.qty,
            trade_count=1,
            first_trade_id=trade.trade_id,
            last_trade_id=trade.trade_id,
            trade_id_runs=[[trade.trade_id, trade.trade_id]],
        )

    def add(self, trade: Trade) -> bool:
        """Adds a trade; False if this trade_id is already in the window."""
        if not add_to_runs(self.trade_id_runs, trade.trade_id):
            return False
        key = (trade.timestamp, trade.trade_id)
        if key < self.open_key:
            self.open, self.open_key, self.first_trade_id = trade.price, key, trade.trade_id
        if key > self.close_key:
            self.close, self.close_key, self.last_trade_id = trade.price, key, trade.trade_id
        self.high = max(self.high, trade.price)
        self.low = min(self.low, trade.price)
        self.volume += trade.qty
        self.notional += trade.price * trade.qty
        self.trade_count += 1
        return True

    def to_candle(self, market: str, interval_s: int) -> Candle:
        exchange, pair = split_market(market)
        return Candle(
            exchange=exchange,
            pair=pair,
            interval_s=interval_s,
            window_start=self.start,
            window_end=self.start + timedelta(seconds=interval_s),
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            vwap=self.notional / self.volume,
            trade_count=self.trade_count,
            first_trade_id=self.first_trade_id,
            last_trade_id=self.last_trade_id,
        )


def gap_candle(market: str, interval_s: int, start: datetime, last_close: float) -> Candle:
    exchange, pair = split_market(market)
    return Candle(
        exchange=exchange,
        pair=pair,
        interval_s=interval_s,
        window_start=start,
        window_end=start + timedelta(seconds=interval_s),
        open=last_close,
        high=last_close,
        low=last_close,
        close=last_close,
        volume=0.0,
        vwap=last_close,
        trade_count=0,
        gap=True,
    )


class CandleState(BaseModel):
    # The market key (topics.market_key): the pair itself on Kraken, so states saved before venues existed
    # still load under the same name.
    pair: str
    interval_s: int
    grace_s: float
    windows: dict[datetime, OpenWindow] = Field(default_factory=dict)
    last_closed_start: datetime | None = None
    last_close: float | None = None
    # Ids counted in closed windows (the newest CLOSED_RUNS_KEPT runs): such a trade coming again is a
    # replay (after a restart or a hand-over), not a late trade.
    closed_trade_ids: list[list[int]] = Field(default_factory=list)
    # Event-time watermark and the wall-clock time at which it last advanced (for the idle check).
    watermark: datetime | None = None
    watermark_wall: datetime | None = None

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.interval_s)

    def add_trade(self, trade: Trade) -> tuple[list[Candle], TradeOutcome]:
        """Add a trade; return the candles it closes and what became of the trade."""
        start = window_start(trade.timestamp, self.interval_s)
        if self.last_closed_start is not None and start <= self.last_closed_start:
            return [], "duplicate" if in_runs(self.closed_trade_ids, trade.trade_id) else "late"
        window = self.windows.get(start)
        if window is None:
            self.windows[start] = OpenWindow.first(start, trade)
        elif not window.add(trade):
            return [], "duplicate"
        if self.watermark is None or trade.timestamp > self.watermark:
            self.watermark = trade.timestamp
            self.watermark_wall = trade.ingested_at
        return self._close_until(self.watermark), "accepted"

    def close_idle(self, wall_now: datetime) -> list[Candle]:
        """Close windows that event time has passed, estimating event time from the wall clock.

        Event time is taken to have advanced by the wall-clock time since the watermark last moved,
        which equals the wall clock for a live feed and never runs ahead of a fast replay.
        """
        if self.watermark is None or self.watermark_wall is None:
            return []
        estimated = self.watermark + max(wall_now - self.watermark_wall, timedelta(0))
        return self._close_until(estimated)

    def _close_until(self, event_time: datetime) -> list[Candle]:
        closed: list[Candle] = []
        for start in sorted(self.windows):
            if start + self.interval + timedelta(seconds=self.grace_s) > event_time:
                break
            closed.extend(self._gaps_before(start))
            window = self.windows.pop(start)
            self.closed_trade_ids = merge_runs(self.closed_trade_ids, window.trade_id_runs, CLOSED_RUNS_KEPT)
            candle = window.to_candle(self.pair, self.interval_s)
            closed.append(candle)
            self.last_closed_start, self.last_close = start, candle.close
        return closed

    def _gaps_before(self, start: datetime) -> list[Candle]:
        if self.last_closed_start is None or self.last_close is None:
            return []
        gaps = []
        gap_start = self.last_closed_start + self.interval
        while gap_start < start:
            gaps.append(gap_candle(self.pair, self.interval_s, gap_start, self.last_close))
            gap_start += self.interval
        return gaps
