"""Volatility targets and forecasts: the realized volatility of the next H candles, the naive trailing
mean (the baseline a volatility model must beat, as persistence is for prices) and a HAR regression.

Volatility here is the mean absolute log return per candle: robust to the fat tails of crypto returns
and in the same unit as a price interval's half-width. HAR (Corsi 2009) regresses the log of the future
volatility on the logs of trailing volatilities over a day, a week and shorter windows: the long memory
of volatility in a few coefficients, fitted by least squares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Trailing windows of the HAR regression, in candles: the last candle, 6, 24 and 168 (a week of hours).
HAR_WINDOWS = (1, 6, 24, 168)
# A candle without any price move has volatility 0, whose log is -inf; this floor keeps logs finite.
FLOOR = 1e-6
# The trailing window whose mean absolute return places a forecast in a volatility regime.
REGIME_WINDOW = 24
TRAILING_VOL = "trailing_vol"
FUTURE_VOL = "future_vol"


def har_feature_names(windows: tuple[int, ...] = HAR_WINDOWS) -> list[str]:
    return [f"log_vol_{w}" for w in windows]


def absolute_returns(close: pd.Series) -> pd.Series:
    """|log(close_t / close_{t-1})|, NaN for the first candle."""
    abs_returns: pd.Series = np.log(close).diff().abs()
    return abs_returns


def future_volatility(abs_returns: pd.Series, horizon: int) -> pd.Series:
    """The target at t: the mean absolute return of candles t+1 .. t+horizon (NaN where not all known)."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 candle, got {horizon}")
    return abs_returns.rolling(horizon).mean().shift(-horizon)


def trailing_volatility(abs_returns: pd.Series, window: int) -> pd.Series:
    """The mean absolute return of candles t-window+1 .. t: known at t."""
    return abs_returns.rolling(window).mean()


def har_features(abs_returns: pd.Series, windows: tuple[int, ...] = HAR_WINDOWS) -> pd.DataFrame:
    """log trailing volatility over each window, one column per window (NaN during warm-up)."""
    return pd.DataFrame(
        {
            name: np.log(trailing_volatility(abs_returns, w).clip(lower=FLOOR))
            for name, w in zip(har_feature_names(windows), windows, strict=True)
        }
    )


def latest_volatility_inputs(close: np.ndarray) -> dict[str, float]:
    """The last row of `volatility_inputs` from the closes of a complete grid (NaN for a missing candle),
    in numpy: what the live path computes per candle, a few microseconds instead of a data frame's
    milliseconds (tests prove the two equal)."""
    abs_returns = np.abs(np.diff(np.log(close)))

    def trailing(window: int) -> float:
        recent = abs_returns[-window:]
        return float(recent.mean()) if recent.size == window and np.isfinite(recent).all() else math.nan

    inputs = {
        name: math.log(max(value, FLOOR)) if math.isfinite(value := trailing(w)) else math.nan
        for name, w in zip(har_feature_names(), HAR_WINDOWS, strict=True)
    }
    inputs[TRAILING_VOL] = trailing(REGIME_WINDOW)
    return inputs


def volatility_inputs(grid: pd.DataFrame) -> pd.DataFrame:
    """The HAR inputs and the regime's trailing volatility at every step of a complete candle grid
    (columns close and missing, as model_inputs.complete_grid makes it), known when the candle closes:
    the one definition training and the live path both call. A missing candle leaves NaN in every
    window it falls in; a gap candle (no trade, the close carried over) counts as no move."""
    abs_returns = absolute_returns(grid["close"].astype(float).where(~grid["missing"]))
    inputs = har_features(abs_returns)
    inputs[TRAILING_VOL] = trailing_volatility(abs_returns, REGIME_WINDOW)
    return inputs


# Not arch's HARX: it averages the series in levels and forecasts H candles ahead by recursion on a
# one-step fit, while this is a direct regression of the log of the next H candles' mean on the logs of
# trailing means, which plain least squares fits in a few lines. tests/unit/test_reference_libraries.py
# checks har_features, future_volatility and this fit against HARX's regressors and least squares.
@dataclass(frozen=True)
class HarModel:
    """log(future volatility) = intercept + coefficients . log(trailing volatilities); the forecast is
    exp of that times a smearing factor (the mean of exp(residual)), so it estimates the mean volatility
    rather than its median."""

    intercept: float
    coefficients: tuple[float, ...]
    smearing: float

    @classmethod
    def fit(cls, features: pd.DataFrame, target: pd.Series) -> HarModel:
        rows = features.notna().all(axis=1) & target.notna()
        if rows.sum() <= features.shape[1] + 1:
            raise ValueError(f"{int(rows.sum())} complete rows are too few to fit HAR")
        x = np.column_stack([np.ones(int(rows.sum())), features[rows].to_numpy()])
        y = np.log(target[rows].clip(lower=FLOOR).to_numpy())
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        residuals = y - x @ beta
        return cls(float(beta[0]), tuple(float(b) for b in beta[1:]), float(np.mean(np.exp(residuals))))

    def predict(self, features: pd.DataFrame) -> pd.Series:
        """The volatility forecast: positive and finite where every feature is known, NaN elsewhere."""
        return pd.Series(self.predict_array(features.to_numpy()), index=features.index)

    def predict_array(self, features: np.ndarray) -> np.ndarray:
        """`predict` of the rows of an array (columns in the model's order), without a frame."""
        log_forecast = self.intercept + features @ np.asarray(self.coefficients)
        return np.asarray(np.exp(log_forecast) * self.smearing, dtype=float)
