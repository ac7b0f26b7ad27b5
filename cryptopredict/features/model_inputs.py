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
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import numpy as np
import pandas as pd

from cryptopredict.features import indicators as ind
from cryptopredict.features.cross_venue import all_cross_venue_features


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


def return_features(grid: pd.DataFrame, lags: int) -> pd.DataFrame:
    """Lagged log returns on the complete grid; NaN wherever the window touches a gap or a hole."""
    returns = grid["close"].astype(float).map(np.log).diff()
    # The return into candle t needs candles t-1 and t to be real (a gap candle's close is a copy).
    unusable = grid["gap"] | grid["missing"]
    returns[unusable | unusable.shift(1, fill_value=True)] = np.nan
    return pd.DataFrame({f"ret_lag_{k}": returns.shift(k - 1) for k in range(1, lags + 1)}, index=grid.index)


def indicator_features(values: pd.DataFrame, close: pd.Series, config: ind.IndicatorConfig) -> pd.DataFrame:
    """Scale-free indicator features from indicator values (columns named as IndicatorConfig's) and the
    close of the same candle; NaN inside an indicator's warm-up."""
    out: dict[str, pd.Series] = {}
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
    out["bb_percent_b"] = ((close - values[ind.BB_LOWER]) / band).where(band != 0, 0.5)
    out["bb_width_pct"] = values[ind.BB_WIDTH]
    out[f"{ind.atr_name(config.atr_window)}_rel"] = values[ind.atr_name(config.atr_window)] / close
    return pd.DataFrame(out, index=values.index)[indicator_feature_names(config)]


def sentiment_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Model columns from `sentiment_features` output: mean 0 when nothing was scored, log1p counts."""
    out = {}
    for column in frame.columns:
        if column.startswith("sentiment_mean_"):
            out[column] = frame[column].fillna(0.0)
        elif column.startswith("sentiment_count_"):
            out[column.replace("sentiment_count_", "sentiment_log_count_")] = np.log1p(frame[column])
    return pd.DataFrame(out, index=frame.index)


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
