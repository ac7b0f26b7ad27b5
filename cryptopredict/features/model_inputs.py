"""The model's input row at a candle: the one definition that training and the live path both call.

Features at the candle starting at t are known when it closes (t + interval), and use nothing later:
- `ret_lag_k`: log return of the k-th most recent candle (k = 1 is the candle at t itself);
- indicators made scale-free, so a model trained on 2015 prices still applies at 2025 prices: moving
  averages, Bollinger bands and MACD relative to the close, ATR relative to the close, RSI / 100,
  Bollinger %B and width. OBV is left out: it is a running total whose level depends on where the
  history starts, so training and the live stream would disagree on it.
- sentiment of the pair's coin, point in time at the close (cryptopredict.features.sentiment): the
  weighted mean (0 when nothing was scored, with the count saying so) and log(1 + count);
- when asked for, the same coin's lagged returns and price spread on other venues, from their candles
  closed one interval before the target's close (cryptopredict.features.cross_venue).

Rows are aligned on a complete time grid: a missing candle or a gap candle (no trades) inside the
lag window leaves NaN in the returns, so the row cannot be used.

Each formula is written once, over values that are either floats or pandas Series (`log_return`,
`scale_free_indicators`, `sentiment_values`, cross_venue.cross_venue_values): `feature_frame` applies
it to whole columns for the training dataset, `latest_inputs` to the floats of one candle for the live
prediction, without a data frame. Both make the same numpy calls in the same order, so the live row is
the training row bit for bit (tests/unit/test_dataset.py compares them row by row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np
import pandas as pd

from cryptopredict.features import indicators as ind
from cryptopredict.features.cross_venue import all_cross_venue_features, latest_cross_venue_values
from cryptopredict.models import Candle

# A feature value: one candle's (live) or a column of them (training).
Value = TypeVar("Value", float, pd.Series)


def return_feature_names(lags: int) -> list[str]:
    return [f"ret_lag_{k}" for k in range(1, lags + 1)]


def indicator_feature_names(config: ind.IndicatorConfig) -> list[str]:
    return [
        *(f"{ind.sma_name(w)}_rel" for w in config.sma_windows),
        *(f"{ind.ema_name(w)}_rel" for w in config.ema_windows),
        f"{ind.rsi_name(config.rsi_window)}_unit",
        "macd_rel",
        "macd_signal_rel",
        "macd_hist_rel",
        "bb_mid_rel",
        "bb_percent_b",
        "bb_width_pct",
        f"{ind.atr_name(config.atr_window)}_rel",
    ]


def complete_grid(candles: pd.DataFrame, interval_s: int) -> pd.DataFrame:
    """Candles (columns window_start, close, gap, ...) on every step from the first to the last start;
    a step with no candle row gets `missing` True and NaN values."""
    frame = candles.set_index(pd.DatetimeIndex(candles["window_start"], name="window_start"))
    frame = frame.drop(columns="window_start")
    grid = pd.date_range(frame.index.min(), frame.index.max(), freq=timedelta(seconds=interval_s))
    full = frame.reindex(grid)
    full.index.name = "window_start"
    full["missing"] = ~full.index.isin(frame.index)
    full["gap"] = full["gap"].fillna(True).astype(bool)
    return full


def log_price(close: Value) -> Value:
    """np.log of each close, called on one value at a time (never math.log, which can round the last bit
    differently): NaN stays NaN."""
    return close.map(np.log) if isinstance(close, pd.Series) else float(np.log(close))


def usable_close(close: Value, unusable: bool | pd.Series) -> Value:
    """The close where the candle is real, NaN where it is a gap (its close is a copy) or missing."""
    if isinstance(close, pd.Series):
        if not isinstance(unusable, pd.Series):
            raise TypeError("a column of closes takes a column of flags")
        return close.where(~unusable)
    return math.nan if unusable else close


def log_return(close: Value, previous: Value) -> Value:
    """The log return into a candle from the one before it, from their usable closes: NaN unless both
    candles are real."""
    return log_price(close) - log_price(previous)


def return_features(grid: pd.DataFrame, lags: int) -> pd.DataFrame:
    """Lagged log returns on the complete grid; NaN wherever the window touches a gap or a hole."""
    close = usable_close(grid["close"].astype(float), grid["gap"] | grid["missing"])
    returns = log_return(close, close.shift(1))
    return pd.DataFrame({f"ret_lag_{k}": returns.shift(k - 1) for k in range(1, lags + 1)}, index=grid.index)


def _ratio_or(numerator: Value, denominator: Value, default: float) -> Value:
    """numerator / denominator, `default` where the denominator is 0 (NaN stays NaN)."""
    if isinstance(numerator, pd.Series):
        return (numerator / denominator).where(denominator != 0, default)
    return numerator / denominator if denominator != 0 else default


def scale_free_indicators(
    values: Mapping[str, Value], close: Value, config: ind.IndicatorConfig
) -> dict[str, Value]:
    """The scale-free indicator features (indicator_feature_names' order) from indicator values (keyed
    as IndicatorConfig names them, NaN inside a warm-up) and the close of the same candle."""
    out: dict[str, Value] = {}
    for w in config.sma_windows:
        out[f"{ind.sma_name(w)}_rel"] = values[ind.sma_name(w)] / close - 1.0
    for w in config.ema_windows:
        out[f"{ind.ema_name(w)}_rel"] = values[ind.ema_name(w)] / close - 1.0
    out[f"{ind.rsi_name(config.rsi_window)}_unit"] = values[ind.rsi_name(config.rsi_window)] / 100.0
    out["macd_rel"] = values[ind.MACD] / close
    out["macd_signal_rel"] = values[ind.MACD_SIGNAL] / close
    out["macd_hist_rel"] = values[ind.MACD_HIST] / close
    out["bb_mid_rel"] = values[ind.BB_MID] / close - 1.0
    band = values[ind.BB_UPPER] - values[ind.BB_LOWER]
    # A flat window has a zero band and no %B; the middle (0.5) is where a narrowing band converges.
    out["bb_percent_b"] = _ratio_or(close - values[ind.BB_LOWER], band, 0.5)
    out["bb_width_pct"] = values[ind.BB_WIDTH]
    out[f"{ind.atr_name(config.atr_window)}_rel"] = values[ind.atr_name(config.atr_window)] / close
    return out


def indicator_features(values: pd.DataFrame, close: pd.Series, config: ind.IndicatorConfig) -> pd.DataFrame:
    """Scale-free indicator features from indicator values (columns named as IndicatorConfig's) and the
    close of the same candle; NaN inside an indicator's warm-up."""
    columns = {str(name): values[name] for name in values.columns}
    return pd.DataFrame(scale_free_indicators(columns, close, config), index=values.index)


def _nan_as(value: Value, fill: float) -> Value:
    if isinstance(value, pd.Series):
        return value.fillna(fill)
    return fill if math.isnan(value) else value


def sentiment_values(features: Mapping[str, Value]) -> dict[str, Value]:
    """Model inputs from `sentiment_features` output (keys or columns in its order): the mean 0 when
    nothing was scored, log1p of the counts."""
    out: dict[str, Value] = {}
    for name in features:
        if name.startswith("sentiment_mean_"):
            out[name] = _nan_as(features[name], 0.0)
        elif name.startswith("sentiment_count_"):
            count = features[name]
            log_count = np.log1p(count) if isinstance(count, pd.Series) else float(np.log1p(count))
            out[name.replace("sentiment_count_", "sentiment_log_count_")] = log_count
    return out


def sentiment_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Model columns from `sentiment_features` output: mean 0 when nothing was scored, log1p counts."""
    return pd.DataFrame(
        sentiment_values({str(name): frame[name] for name in frame.columns}), index=frame.index
    )


def feature_frame(
    candles: pd.DataFrame,
    interval_s: int,
    lags: int,
    indicators: pd.DataFrame,
    config: ind.IndicatorConfig,
    sentiment: pd.DataFrame | None = None,
    cross_venue: Mapping[str, pd.DataFrame] | None = None,
    cross_venue_lags: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model inputs of every step from the first to the last candle (NaN where unusable), and the
    complete grid they were computed on. `indicators` and `sentiment` are indexed by window_start;
    `cross_venue`: exchange -> that venue's candles of the same coin and interval (None: no such features)."""
    grid = complete_grid(candles, interval_s)
    close = grid["close"].astype(float)
    parts = [return_features(grid, lags), indicator_features(indicators.reindex(grid.index), close, config)]
    if sentiment is not None:
        parts.append(sentiment_columns(sentiment.reindex(grid.index)))
    if cross_venue:
        parts.append(all_cross_venue_features(grid, cross_venue, interval_s, cross_venue_lags))
    return pd.concat(parts, axis=1), grid


def _recent_closes(history: Sequence[Candle], steps: int) -> list[float]:
    """The usable closes of the last `steps` steps of the complete grid that ends at the newest candle of
    `history` (oldest first): complete_grid's rows there, NaN where a candle is missing or a gap."""
    last = history[-1]
    step = timedelta(seconds=last.interval_s)
    closes = [math.nan] * steps
    for candle in reversed(history):
        back, off_grid = divmod(last.window_start - candle.window_start, step)
        if back >= steps:
            break
        if not off_grid:
            closes[steps - 1 - back] = usable_close(candle.close, candle.gap)
    return closes


def sentiment_at(frame: pd.DataFrame, at: datetime) -> dict[str, float]:
    """The row of `frame` (sentiment_features' columns, indexed by window start, as the store reads them)
    at `at`, as floats; NaN where it has none, as feature_frame's reindex leaves it."""
    columns = [str(column) for column in frame.columns]
    rows = np.flatnonzero(frame.index == at)
    if not len(rows):
        return dict.fromkeys(columns, math.nan)
    return dict(zip(columns, frame.to_numpy(dtype=float)[rows[-1]].tolist(), strict=True))


def latest_inputs(
    history: Sequence[Candle],
    indicator_values: Mapping[str, float | None],
    lags: int,
    config: ind.IndicatorConfig,
    sentiment: Mapping[str, float] | None = None,
    cross_venue: Mapping[str, pd.DataFrame] | None = None,
    cross_venue_lags: int = 0,
) -> dict[str, float]:
    """feature_frame's row at the newest candle of `history` (the same names, order and values), from
    floats: the live model input, with no data frame. `indicator_values`: the indicator state's values at
    that candle (None in a warm-up); `sentiment`: sentiment_features' values at its close (sentiment_at);
    `cross_venue`: exchange -> that venue's candles of the coin, at least those the row reads
    (serving.cross_venue_window)."""
    last = history[-1]
    closes = _recent_closes(history, max(lags, 1) + 1)
    row = {f"ret_lag_{k}": log_return(closes[-k], closes[-k - 1]) for k in range(1, lags + 1)}
    values = {name: math.nan if value is None else value for name, value in indicator_values.items()}
    row.update(scale_free_indicators(values, last.close, config))
    if sentiment is not None:
        row.update(sentiment_values(sentiment))
    if cross_venue:
        previous = log_price(closes[-2])
        for exchange in sorted(cross_venue):
            row.update(
                latest_cross_venue_values(
                    cross_venue[exchange],
                    previous,
                    last.window_start,
                    last.interval_s,
                    cross_venue_lags,
                    exchange,
                )
            )
    return row
