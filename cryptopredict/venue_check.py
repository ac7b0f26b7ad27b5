"""Our closed 1m candles against the venue's own OHLC endpoint: a candle that differs from the venue's row
for the same window by more than the venue's `ohlc_tolerance` means trades were lost, doubled or
mis-stamped on the way to the store, which no other check sees.

`compare_candles` is the comparison; `check_pair` runs it for one pair and window range (store reader,
the venue REST client's `ohlc`) and exports it; `watch_venue_candles` is what the feed process runs beside
the feed, once a minute by default, over the windows closed since its previous round.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pandas as pd
from sqlalchemy import Engine

from cryptopredict import metrics
from cryptopredict.settings import Settings
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.report import read_candles_between
from cryptopredict.topics import market_key, namespaced_pair, split_namespace

logger = logging.getLogger(__name__)

# The candles compared: every venue offers 1m OHLC, and 1m is the finest interval the store keeps.
CHECK_INTERVAL_S = 60
# The first round of a check, and one after a long outage, looks back at most this many windows.
MAX_WINDOWS = 60
FIELDS = ("open", "high", "low", "close", "volume")


class OhlcRow(Protocol):
    """A venue's OHLC row (cryptopredict.venue_rest.OhlcRow); `time` starts the window."""

    @property
    def time(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...


class OhlcSource(Protocol):
    """A venue's REST client: its closed candles of `interval_s` starting at or after `since_s`, for a pair
    named as the project names it on that venue (no namespace)."""

    async def ohlc(self, pair: str, interval_s: int, since_s: int) -> Sequence[OhlcRow]: ...


@dataclass(frozen=True)
class WindowCheck:
    """One of our candles against the venue's row of its window: the largest relative difference and the
    field it is in ("missing" when the venue has no row for a window in which we have trades)."""

    window_start: datetime
    deviation: float
    field: str
    ours: float
    venue: float | None


@dataclass(frozen=True)
class OhlcComparison:
    windows: list[WindowCheck]
    tolerance: float
    # Windows the venue has and the store does not (not judged here: a stalled pipeline is FeedSilent's
    # and ConsumerLagGrowing's, and a feed that just started has no candles before its start).
    unmatched_venue_rows: int = 0

    @property
    def max_deviation(self) -> float:
        return max((w.deviation for w in self.windows), default=0.0)

    @property
    def disagreeing(self) -> list[WindowCheck]:
        return [w for w in self.windows if w.deviation > self.tolerance]


def relative_deviation(ours: float, venue: float) -> float:
    """|ours - venue| relative to the larger of the two: 0 when they are equal (both 0 included), 1 when
    one of them is 0 and the other is not; symmetric, so neither side is taken as the truth."""
    scale = max(abs(ours), abs(venue))
    return 0.0 if scale == 0 else abs(ours - venue) / scale


def compare_candles(ours: pd.DataFrame, venue: Sequence[OhlcRow], tolerance: float) -> OhlcComparison:
    """Each of our candles (rows of the store's `candles`: window_start, open, high, low, close, volume)
    against the venue's row starting at the same second. A window the venue has no row for agrees when
    our candle is a gap (some venues list no empty windows) and disagrees fully otherwise."""
    by_start = {int(row.time): row for row in venue}
    windows = []
    matched = 0
    for candle in ours.to_dict("records"):
        start = pd.Timestamp(candle["window_start"]).to_pydatetime()
        row = by_start.get(int(start.timestamp()))
        if row is None:
            volume = float(candle["volume"])
            windows.append(WindowCheck(start, float(volume > 0), "missing", volume, None))
            continue
        matched += 1
        theirs = {f: float(getattr(row, f)) for f in FIELDS}
        deviation, field = max((_deviation(float(candle[f]), theirs[f]), f) for f in FIELDS)
        windows.append(WindowCheck(start, deviation, field, float(candle[field]), theirs[field]))
    return OhlcComparison(windows, tolerance, unmatched_venue_rows=len(by_start) - matched)


def _deviation(ours: float, venue: float) -> float:
    # A NaN (a venue's "NaN" parses as a float) would compare below any tolerance: it disagrees fully.
    deviation = relative_deviation(ours, venue)
    return 1.0 if math.isnan(deviation) else deviation


def window_floor(moment: datetime, interval_s: int = CHECK_INTERVAL_S) -> datetime:
    seconds = int(moment.timestamp()) // interval_s * interval_s
    return datetime.fromtimestamp(seconds, tz=UTC)


async def check_pair(
    engine: Engine,
    source: OhlcSource,
    exchange: str,
    pair: str,
    start: datetime,
    end: datetime,
    tolerance: float,
) -> OhlcComparison:
    """Compares our 1m candles of `pair` (as the store names it, namespace included) whose windows start in
    [start, end) with the venue's, and exports the result: the deviation gauge, the windows compared and
    the disagreeing ones (each window is meant to be checked once, so that a count is a window)."""
    market = market_key(exchange, pair)
    ours = await asyncio.to_thread(read_candles_between, engine, market, CHECK_INTERVAL_S, start, end)
    _, venue_pair = split_namespace(pair)  # the venue knows nothing of a namespace
    rows = await source.ohlc(venue_pair, CHECK_INTERVAL_S, int(start.timestamp()))
    venue = [row for row in rows if row.time < end.timestamp()]
    comparison = compare_candles(ours, venue, tolerance)
    metrics.VENUE_OHLC_CHECKS.labels(exchange, "ok").inc()
    if comparison.windows:
        metrics.VENUE_OHLC_DEVIATION.labels(exchange, pair).set(comparison.max_deviation)
        metrics.VENUE_OHLC_WINDOWS.labels(exchange, pair).inc(len(comparison.windows))
    metrics.VENUE_OHLC_DISAGREEING.labels(exchange, pair).inc(len(comparison.disagreeing))
    for window in comparison.disagreeing:
        logger.warning(
            "%s %s candle of %s disagrees with the venue's OHLC: %s %s here, %s there (%.2f%% apart)",
            exchange, pair, window.window_start.isoformat(), window.field, window.ours, window.venue,
            100 * window.deviation,
        )  # fmt: skip
    return comparison


async def watch_venue_candles(
    settings: Settings,
    exchange: str,
    source: OhlcSource | None,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    rounds: int | None = None,
) -> None:
    """Every `ohlc_check_every_s` of the venue's settings, compares the 1m candles of each of its pairs
    whose windows closed at least `ohlc_check_delay_s` ago, and were not compared yet, with the venue's
    OHLC. Runs until cancelled (or for `rounds` rounds); a failed round is logged and counted, and its
    windows are tried again in the next one. Starts with the windows that begin after it starts, so a
    feed's first, partial window is never judged."""
    venue = settings.venue(exchange)
    if venue.ohlc_check_every_s <= 0 or source is None:
        why = "turned off" if venue.ohlc_check_every_s <= 0 else "no REST client"
        logger.info("no OHLC check of %s: %s", exchange, why)
        return
    pairs = [namespaced_pair(pair, settings.namespace) for pair in venue.pairs]
    interval = timedelta(seconds=CHECK_INTERVAL_S)
    first = window_floor(clock()) + interval
    checked_upto = dict.fromkeys(pairs, first)
    engine = sync_engine(settings.postgres, settings.store.dialect)
    try:
        done = 0
        while rounds is None or done < rounds:
            await asyncio.sleep(venue.ohlc_check_every_s)
            done += 1
            end = window_floor(clock() - timedelta(seconds=venue.ohlc_check_delay_s))
            for pair in pairs:
                start = max(checked_upto[pair], end - MAX_WINDOWS * interval)
                if start >= end:
                    continue
                try:
                    await check_pair(engine, source, exchange, pair, start, end, venue.ohlc_tolerance)
                # Whatever the store or the venue throws (each client has its own errors), the feed
                # beside this check must go on: the failure is logged, counted and retried.
                except Exception as exc:
                    metrics.VENUE_OHLC_CHECKS.labels(exchange, "failed").inc()
                    logger.warning("OHLC check of %s %s failed: %s", exchange, pair, exc)
                    continue
                checked_upto[pair] = end
    finally:
        engine.dispose()
