"""Price intervals that adapt to volatility: the residuals of a price model divided by a HAR forecast of
the volatility over the horizon, calibrated by conformal prediction per volatility regime (Mondrian), and
stored with the model as a grid of quantiles of the scaled residuals.

A forecast's interval is then predicted log return + scale * quantile of its regime: wide in wild hours,
narrow in calm ones, with each regime's coverage calibrated on its own. The regime is the third of the
trailing volatility, with cut points fixed on the calibration rows, so it is known when the forecast is
made. Where the volatility inputs are not known (the first week of candles, a missing candle), the
constant-width interval of the same residuals is used instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, Field, model_validator

from cryptopredict.ml.intervals import (
    REGIMES,
    christoffersen_pvalue,
    conformal_quantile,
    interval_coverage,
    kupiec_pvalue,
    mondrian_quantiles,
    pinball_loss,
    regime_cut_points,
    regime_of,
    winkler_score,
)
from cryptopredict.ml.volatility import (
    FUTURE_VOL,
    HAR_WINDOWS,
    TRAILING_VOL,
    HarModel,
    har_feature_names,
)
from cryptopredict.models.ml import VolatilityRegime

# Levels of the stored quantile grid: fine enough that any coverage ACI moves to is read off it closely.
GRID_LEVELS = [round(level, 3) for level in np.arange(0.005, 1.0, 0.005)]
# Below this many calibration rows in a regime its quantiles are too coarse to trust.
MIN_REGIME_ROWS = 30
# Fewer rows than this to fit the HAR scale on and its week-long input barely varies among them: the fit
# extrapolates wildly (on 100 rows of a random walk the scale's coefficients ran to -43) and the interval
# is worse than constant width, which is served instead.
MIN_HAR_ROWS = 500


class HarParams(BaseModel):
    """A fitted HarModel as plain numbers."""

    windows: list[int]
    intercept: float
    coefficients: list[float]
    smearing: float = Field(gt=0)

    def model(self) -> HarModel:
        return HarModel(self.intercept, tuple(self.coefficients), self.smearing)


class AdaptiveInterval(BaseModel):
    """What serving needs to draw a volatility-scaled interval: the HAR model, the regime cut points and
    each regime's conformal quantiles of the scaled residuals at GRID_LEVELS."""

    har: HarParams
    regime_cuts: tuple[float, float]
    levels: list[float]
    scaled_quantiles: dict[VolatilityRegime, list[float]]

    @model_validator(mode="after")
    def _complete(self) -> AdaptiveInterval:
        if set(self.scaled_quantiles) != set(get_args(VolatilityRegime)):
            raise ValueError(
                f"need quantiles for every regime {REGIMES}, got {sorted(self.scaled_quantiles)}"
            )
        for regime, values in self.scaled_quantiles.items():
            if len(values) != len(self.levels) or any(np.diff(values) < 0):
                raise ValueError(f"the {regime} quantiles must be one non-decreasing value per level")
        return self


@dataclass(frozen=True)
class Calibration:
    """Both intervals of one set of residuals: the constant-width quantiles and the adaptive ones."""

    constant: list[float]  # conformal quantiles of the unscaled residuals at GRID_LEVELS
    adaptive: AdaptiveInterval | None  # None: too few rows with volatility inputs to fit HAR


def calibrate(
    residuals: npt.ArrayLike,
    calibration_inputs: pd.DataFrame,
    har_fit_rows: pd.DataFrame,
) -> Calibration:
    """`residuals`: out-of-sample log-return residuals, one per row of `calibration_inputs` (which holds
    the volatility inputs of those rows); `har_fit_rows`: rows before them with volatility inputs and
    FUTURE_VOL, to fit the HAR scale on."""
    values = np.asarray(residuals, dtype=float)
    constant = [conformal_quantile(values, level) for level in GRID_LEVELS]
    names = har_feature_names()
    complete = har_fit_rows[[*names, FUTURE_VOL]].notna().all(axis=1)
    if complete.sum() < MIN_HAR_ROWS:
        return Calibration(constant, None)
    har = HarModel.fit(har_fit_rows[names], har_fit_rows[FUTURE_VOL])
    scale = har.predict(calibration_inputs[names]).to_numpy()
    trailing = calibration_inputs[TRAILING_VOL].to_numpy()
    known = np.isfinite(scale) & np.isfinite(trailing)
    if known.sum() < MIN_REGIME_ROWS * len(REGIMES):
        return Calibration(constant, None)
    cuts = regime_cut_points(trailing[known])
    regimes = regime_of(trailing[known], cuts)
    scaled = values[known] / scale[known]
    if min(np.sum(regimes == g) for g in range(len(REGIMES))) < MIN_REGIME_ROWS:
        return Calibration(constant, None)  # tied trailing volatilities (flat prices) leave a regime empty
    quantiles = {REGIMES[g]: q for g, q in mondrian_quantiles(scaled, regimes, GRID_LEVELS).items()}
    params = HarParams(
        windows=list(HAR_WINDOWS),
        intercept=har.intercept,
        coefficients=list(har.coefficients),
        smearing=har.smearing,
    )
    return Calibration(
        constant,
        AdaptiveInterval(har=params, regime_cuts=cuts, levels=GRID_LEVELS, scaled_quantiles=quantiles),  # type: ignore[arg-type]
    )


def quantile_at(levels: list[float], quantiles: npt.ArrayLike, level: float) -> float:
    """The quantile at `level`, interpolated on the grid (clamped at its ends)."""
    return float(np.interp(level, levels, np.asarray(quantiles, dtype=float)))


@dataclass(frozen=True)
class Scaled:
    """The volatility side of one forecast: its HAR scale and regime, or None where inputs are unknown."""

    volatility: float | None
    regime: VolatilityRegime | None


def scale_of(adaptive: AdaptiveInterval, inputs: pd.DataFrame) -> list[Scaled]:
    """The HAR forecast and regime of each row of volatility inputs."""
    har_inputs = inputs[har_feature_names()].to_numpy(dtype=float)
    return _scaled(adaptive, har_inputs, inputs[TRAILING_VOL].to_numpy(dtype=float))


def scale_of_inputs(adaptive: AdaptiveInterval, inputs: Mapping[str, float]) -> Scaled:
    """scale_of of one row of volatility inputs given as name -> value (the live path's), no frame."""
    har_inputs = np.array([[inputs[name] for name in har_feature_names()]], dtype=float)
    return _scaled(adaptive, har_inputs, np.array([inputs[TRAILING_VOL]], dtype=float))[0]


def _scaled(adaptive: AdaptiveInterval, har_inputs: np.ndarray, trailing: np.ndarray) -> list[Scaled]:
    forecast = adaptive.har.model().predict_array(har_inputs)
    regimes = regime_of(np.nan_to_num(trailing, nan=0.0), adaptive.regime_cuts)
    return [
        Scaled(float(f), REGIMES[g]) if np.isfinite(f) and f > 0 and np.isfinite(t) else Scaled(None, None)  # type: ignore[arg-type]
        for f, t, g in zip(forecast, trailing, regimes, strict=True)
    ]


def offset_at(
    constant: list[float], adaptive: AdaptiveInterval | None, scaled: Scaled, level: float
) -> float:
    """The log-return offset of the `level` quantile for one forecast: scale * its regime's scaled
    quantile where the volatility is known, else the constant-width quantile."""
    if adaptive is None or scaled.volatility is None or scaled.regime is None:
        return quantile_at(GRID_LEVELS, constant, level)
    return scaled.volatility * quantile_at(adaptive.levels, adaptive.scaled_quantiles[scaled.regime], level)


def bounds(
    constant: list[float], adaptive: AdaptiveInterval | None, scaled: list[Scaled], coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) log-return offsets of each forecast's central `coverage` interval."""
    tail = (1.0 - coverage) / 2.0
    lower = np.array([offset_at(constant, adaptive, s, tail) for s in scaled])
    upper = np.array([offset_at(constant, adaptive, s, 1.0 - tail) for s in scaled])
    return lower, upper


def interval_report(
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    calibration: Calibration,
    inputs: pd.DataFrame,
    coverage: float,
    quantile_levels: list[float],
) -> dict[str, float]:
    """The adaptive interval against the constant-width one on a test window, in log-return space:
    coverage overall and per regime, interval score and its ratio, pinball loss at the served quantile
    levels, and Kupiec's and Christoffersen's p-values (`coverage_<regime>` is NaN for an empty regime)."""
    y, pred = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    scaled = scale_of(calibration.adaptive, inputs) if calibration.adaptive else [Scaled(None, None)] * len(y)
    adaptive_low, adaptive_high = bounds(calibration.constant, calibration.adaptive, scaled, coverage)
    constant_low, constant_high = bounds(calibration.constant, None, scaled, coverage)
    inside = (y >= pred + adaptive_low) & (y <= pred + adaptive_high)
    constant_inside = (y >= pred + constant_low) & (y <= pred + constant_high)
    regimes = np.array([s.regime or "" for s in scaled])
    figures = {
        "coverage_overall": interval_coverage(y, pred + adaptive_low, pred + adaptive_high),
        "constant_coverage_overall": float(np.mean(constant_inside)),
        "interval_score": winkler_score(y, pred + adaptive_low, pred + adaptive_high, coverage),
        "constant_interval_score": winkler_score(y, pred + constant_low, pred + constant_high, coverage),
        "kupiec_pvalue": kupiec_pvalue(inside, coverage),
        "christoffersen_pvalue": christoffersen_pvalue(inside),
        "constant_kupiec_pvalue": kupiec_pvalue(constant_inside, coverage),
        "constant_christoffersen_pvalue": christoffersen_pvalue(constant_inside),
        "adaptive_share": float(np.mean(regimes != "")),
    }
    figures["interval_score_vs_constant"] = figures["interval_score"] / figures["constant_interval_score"]
    for regime in REGIMES:
        rows = regimes == regime
        figures[f"coverage_{regime}"] = float(np.mean(inside[rows])) if rows.any() else float("nan")
        figures[f"constant_coverage_{regime}"] = (
            float(np.mean(constant_inside[rows])) if rows.any() else float("nan")
        )
    for level in quantile_levels:
        offsets = np.array([offset_at(calibration.constant, calibration.adaptive, s, level) for s in scaled])
        figures[f"pinball_{level:g}"] = pinball_loss(y, pred + offsets, level)
    return figures
