"""Cross-venue features: what the target's coin did on the other venues, point in time.

The row of the target candle starting at t is known at its close, t + interval. Each other venue
(`features.cross_venue`) adds, from its candles of the same coin (cryptopredict.venues.base_asset) that
closed by t, one interval before that close so a live row never waits for another venue's candle:
- `xv_<exchange>_ret_lag_k`: the log return of that venue's k-th most recent such candle (k = 1 is the
  candle [t - interval, t));
- `xv_<exchange>_spread`: log(close there / close on the target venue), both of the candle
  [t - interval, t): the price gap between the venues at the same moment.
NaN where a candle involved is missing or a gap (no trades: its close is a copy, not a price). A lead of
one interval is therefore out of reach by design; a lead of two intervals or more is in the features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import numpy as np
import pandas as pd

from cryptopredict.topics import market_key, split_market, split_namespace
from cryptopredict.venues import base_asset

PREFIX = "xv_"
_NAME = re.compile(rf"^{PREFIX}([a-z]+)_(?:ret_lag_(\d+)|spread)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Log closes at one time (live) or at every time of the target's grid (training).
LogClose = TypeVar("LogClose", float, np.ndarray)


def feature_names(exchange: str, lags: int) -> list[str]:
    return [*(f"{PREFIX}{exchange}_ret_lag_{k}" for k in range(1, lags + 1)), f"{PREFIX}{exchange}_spread"]


def venues_of(features: Iterable[str]) -> dict[str, int]:
    """Exchange -> number of return lags, of the cross-venue features among `features` (a model's
    inputs); empty when it reads none."""
    venues: dict[str, int] = {}
    for name in features:
        if match := _NAME.match(name):
            exchange, lag = match.group(1), match.group(2)
            venues[exchange] = max(venues.get(exchange, 0), int(lag) if lag else 0)
    return venues


def _quote(pair: str) -> str:
    return split_namespace(pair)[1].split("/")[1]


def source_market(target: str, exchange: str, pairs: Sequence[str]) -> str | None:
    """The market of the target's coin on `exchange`, among `pairs` (that venue's configured pairs):
    the one with the target's quote currency, else the first of the coin; None when the venue lists no
    pair of the coin or is the target's own."""
    target_exchange, target_pair = split_market(target)
    if exchange == target_exchange:
        return None
    same_coin = [pair for pair in pairs if base_asset(pair) == base_asset(target_pair)]
    same_quote = [pair for pair in same_coin if _quote(pair) == _quote(target_pair)]
    chosen = same_quote or same_coin
    return market_key(exchange, chosen[0]) if chosen else None


def source_markets(
    target: str, exchanges: Iterable[str], pairs_of: Callable[[str], Sequence[str]]
) -> dict[str, str]:
    """Exchange -> the market each of `exchanges` (but the target's own) contributes to the target's
    features; `pairs_of(exchange)` are the pairs configured on a venue (Settings.venue_pairs)."""
    chosen = {exchange: source_market(target, exchange, pairs_of(exchange)) for exchange in exchanges}
    return {exchange: market for exchange, market in chosen.items() if market is not None}


def _real_log_closes(candles: pd.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The window starts (UTC, ns) and log closes of `candles`, NaN for gap candles."""
    index = pd.DatetimeIndex(candles["window_start"]).tz_convert("UTC").as_unit("ns")
    log_close = np.log(candles["close"].to_numpy(dtype=float))
    log_close[candles["gap"].to_numpy(dtype=bool)] = np.nan
    return index, log_close


def _log_close(candles: pd.DataFrame) -> pd.Series:
    """Log closes of real candles by window_start (NaN for gap candles), or an empty series."""
    if candles.empty:
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
    index, values = _real_log_closes(candles)
    log_close = pd.Series(values, index=index)
    return log_close[~log_close.index.duplicated(keep="last")]


def cross_venue_values(
    their_log_close: Callable[[int], LogClose], our_previous_log_close: LogClose, lags: int, exchange: str
) -> dict[str, LogClose]:
    """The features of `exchange` (feature_names' order) from `their_log_close(k)`, that venue's log close
    of the candle starting k intervals before the target's, and the target venue's own log close of the
    candle before it (NaN where a candle is missing or a gap)."""
    names = feature_names(exchange, lags)
    values = {name: their_log_close(k) - their_log_close(k + 1) for k, name in enumerate(names[:-1], 1)}
    values[names[-1]] = their_log_close(1) - our_previous_log_close
    return values


def cross_venue_features(
    grid: pd.DataFrame, other: pd.DataFrame, interval_s: int, lags: int, exchange: str
) -> pd.DataFrame:
    """The features of `exchange` at every step of the target's complete grid (model_inputs.complete_grid:
    indexed by window_start, columns close, gap, missing), from `other`, that venue's candles of the
    same interval (columns window_start, close, gap). Only other candles with window_end <= t enter
    the row at t: each value is looked up at t - k * interval for k >= 1."""
    step = pd.Timedelta(seconds=interval_s)
    times = pd.DatetimeIndex(grid.index).tz_convert("UTC").as_unit("ns")
    theirs = _log_close(other)

    def their_log_close(back: int) -> np.ndarray:
        return theirs.reindex(times - back * step).to_numpy(dtype=float)

    ours = np.log(grid["close"].to_numpy(dtype=float))
    ours[(grid["gap"] | grid["missing"]).to_numpy(dtype=bool)] = np.nan
    # The target venue's close of the candle before t, by time on the complete grid.
    previous = pd.Series(ours, index=times).reindex(times - step).to_numpy(dtype=float)
    return pd.DataFrame(cross_venue_values(their_log_close, previous, lags, exchange), index=grid.index)


def latest_cross_venue_values(
    other: pd.DataFrame,
    our_previous_log_close: float,
    at: datetime,
    interval_s: int,
    lags: int,
    exchange: str,
) -> dict[str, float]:
    """cross_venue_features' row at the target candle starting at `at`, from `other` (that venue's
    candles, columns window_start, close, gap: the few the live row reads) and the target venue's log
    close of the candle before (NaN when it is missing or a gap), without a frame per row."""
    by_start: dict[int, float] = {}
    if not other.empty:
        starts, values = _real_log_closes(other)
        # Later rows overwrite earlier ones with the same start, as _log_close keeps the last.
        by_start = dict(zip(starts.asi8.tolist(), values.tolist(), strict=True))
    at_ns = (at - _EPOCH) // timedelta(microseconds=1) * 1000
    step_ns = interval_s * 1_000_000_000

    def their_log_close(back: int) -> float:
        return by_start.get(at_ns - back * step_ns, math.nan)

    return cross_venue_values(their_log_close, our_previous_log_close, lags, exchange)


def all_cross_venue_features(
    grid: pd.DataFrame, others: Mapping[str, pd.DataFrame], interval_s: int, lags: int
) -> pd.DataFrame:
    """cross_venue_features of every venue in `others` (exchange -> candles), in exchange order."""
    parts = [
        cross_venue_features(grid, others[exchange], interval_s, lags, exchange)
        for exchange in sorted(others)
    ]
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=grid.index)
