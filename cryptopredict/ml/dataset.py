"""Supervised dataset for (pair, interval, horizon): model inputs at t, log return from t to t + horizon.

The target of the candle starting at t is the close of the candle starting at t + horizon * interval,
found by timestamp on a complete time grid, never by shifting rows: a hole in the history can never pair
a row with the wrong future. Rows are dropped, and counted by reason, when their lag window touches a gap
or a missing candle, an indicator is still warming up, another venue's candle a cross-venue feature
needs is missing or a gap, or the target candle is a gap or missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from cryptopredict.features.cross_venue import PREFIX as CROSS_VENUE
from cryptopredict.features.indicators import IndicatorConfig, indicator_frame
from cryptopredict.features.model_inputs import feature_frame
from cryptopredict.ml.volatility import FUTURE_VOL, absolute_returns, future_volatility, volatility_inputs
from cryptopredict.models import Candle

TARGET = "target_log_return"
FEATURE_TIME = "window_start"
LAST_CLOSE = "close"
TARGET_CLOSE = "target_close"


@dataclass(frozen=True)
class Dataset:
    # features, FEATURE_TIME, LAST_CLOSE, TARGET_CLOSE, TARGET, and the volatility columns that scale the
    # interval (volatility_inputs and FUTURE_VOL, NaN during their warm-up); in time order
    frame: pd.DataFrame
    features: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    @property
    def content_hash(self) -> str:
        """Changes with any value, column or row order: the identity of the data a model saw."""
        digest = hashlib.sha256(",".join(self.frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]


def candles_from_frame(candles: pd.DataFrame, pair: str, interval_s: int) -> list[Candle]:
    """Store rows as Candle objects for the indicator kernels (the rows are trusted: no validation)."""
    step = timedelta(seconds=interval_s)
    columns = ("open", "high", "low", "close", "volume", "vwap", "trade_count", "gap")
    rows: list[dict[Any, Any]] = candles.to_dict("records")
    return [
        Candle.model_construct(
            pair=pair,
            interval_s=interval_s,
            window_start=row["window_start"],
            window_end=row["window_start"] + step,
            **{column: row[column] for column in columns},
        )
        for row in rows
    ]


def indicator_values(
    candles: pd.DataFrame, pair: str, interval_s: int, stored: pd.DataFrame | None, config: IndicatorConfig
) -> tuple[pd.DataFrame, str]:
    """The indicator values of every candle: the feature store's rows when they cover the whole history,
    else computed from the candles by the stream's own code (history loaded from files has no rows).
    Returns the values indexed by window_start and where they came from."""
    starts = pd.DatetimeIndex(candles["window_start"])
    if stored is not None and len(stored) and starts.isin(stored.index).all():
        return stored.loc[starts, config.feature_names()], "store"
    frame = indicator_frame(candles_from_frame(candles, pair, interval_s), config)
    return frame[config.feature_names()], "computed"


def build_dataset(
    candles: pd.DataFrame,
    interval_s: int,
    lags: int,
    horizon: int,
    indicators: pd.DataFrame,
    sentiment: pd.DataFrame | None = None,
    config: IndicatorConfig | None = None,
    cross_venue: Mapping[str, pd.DataFrame] | None = None,
    cross_venue_lags: int = 0,
) -> Dataset:
    """`candles`: store rows of one (pair, interval) (window_start, close, gap, ...); `indicators`: the
    indicator values by window_start; `sentiment`: point-in-time sentiment features by window_start,
    already taken at each candle's close (None: no sentiment for this coin); `cross_venue`: exchange ->
    that venue's candles of the same coin and interval, for `cross_venue_lags` lagged returns and the
    spread (cryptopredict.features.cross_venue; None: no such features)."""
    features, grid = feature_frame(
        candles,
        interval_s,
        lags,
        indicators,
        config or IndicatorConfig(),
        sentiment,
        cross_venue,
        cross_venue_lags,
    )
    names = list(features.columns)
    close = grid["close"].astype(float)

    target_close = close.shift(-horizon)
    target_unusable = (grid["gap"] | grid["missing"]).shift(-horizon)
    has_future = pd.Series(np.arange(len(grid)) < len(grid) - horizon, index=grid.index)
    real = ~grid["missing"] & has_future  # the newest rows wait for their future: not drops

    returns_ok = features[[n for n in names if n.startswith("ret_lag_")]].notna().all(axis=1)
    own_ok = features[[n for n in names if not n.startswith(CROSS_VENUE)]].notna().all(axis=1)
    others_ok = features.notna().all(axis=1)
    target_ok = target_unusable.eq(False)
    dropped = {
        "window_touches_gap": int((real & ~returns_ok).sum()),
        "indicator_warm_up": int((real & returns_ok & ~own_ok).sum()),
        "target_touches_gap": int((real & own_ok & others_ok & ~target_ok).sum()),
    }
    if cross_venue:
        dropped["cross_venue_missing"] = int((real & own_ok & ~others_ok).sum())
    keep = real & own_ok & others_ok & target_ok
    frame = features[keep].copy()
    frame[FEATURE_TIME] = frame.index
    frame[LAST_CLOSE] = close[keep]
    frame[TARGET_CLOSE] = target_close[keep].astype(float)
    frame[TARGET] = np.log(frame[TARGET_CLOSE] / frame[LAST_CLOSE])
    volatility = volatility_inputs(grid)
    volatility[FUTURE_VOL] = future_volatility(absolute_returns(close.where(~grid["missing"])), horizon)
    frame[volatility.columns] = volatility[keep]
    return Dataset(frame=frame.reset_index(drop=True), features=names, dropped=dropped)
