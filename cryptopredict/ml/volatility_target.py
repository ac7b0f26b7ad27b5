"""The volatility target of a (pair, interval, horizon): its dataset, its three models and its gate.

What is forecast: the volatility of the next H candles, the mean over those candles of one per-candle
volatility measure, the estimator, fixed per dataset (and so per model) and recorded with it:

- `mean_abs_log_return`: |log(close_t / close_t-1)| of the target's own candles;
- `realized_vol_1m`: sqrt(2/pi) * sqrt(sum of the squared 1-minute log returns inside the candle), for
  candles longer than a minute whose whole history has its 1-minute candles. Under normal returns
  sqrt(2/pi) * sigma is E|r|, so both estimators measure the candle's expected absolute log return on
  the same scale; the 1-minute one is far less noisy. A history that is not covered minute by minute
  uses the first estimator throughout: the two are never mixed within one dataset.

The inputs are the logs of the trailing means of that measure over the HAR windows and over the horizon
(`volatility_feature_names`). The models, all predicting the same quantity:
- `naive`: the trailing mean over the last H candles (no fit): the first champion, as persistence is
  for prices;
- `har`: log-linear OLS on the inputs (Corsi 2009), exp of the fitted log;
- `xgboost`: boosted trees on the same inputs predicting the log, exp of it.
Neither is smeared: the loss is on the log scale (below), where a smearing factor is a constant bias.

The loss is the absolute error of log volatility (forecast and realized floored at `FLOOR`). QLIKE
assumes a variance proxy and is infinite when the realized value is 0, which a quiet minute without a
trade makes common; it is dominated by those near-zero values. The log-MAE is robust to the heavy right
tail of realized volatility and its measurement noise, and a ratio error counts the same in calm and
wild markets. Promotion needs a lower log-MAE than the naive forecast and the champion, each with a
one-sided Diebold-Mariano p-value below alpha (horizon-H overlap corrected). A forecast that is NaN,
infinite, zero or negative on the test window is refused with that reason.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from cryptopredict.features.model_inputs import complete_grid
from cryptopredict.ml.evaluation import GateDecision, diebold_mariano
from cryptopredict.ml.splits import Fold
from cryptopredict.ml.volatility import (
    FLOOR,
    FUTURE_VOL,
    HAR_WINDOWS,
    HarModel,
    absolute_returns,
    future_volatility,
    har_feature_names,
    har_features,
)

Estimator = Literal["mean_abs_log_return", "realized_vol_1m"]
MEAN_ABS_LOG_RETURN: Estimator = "mean_abs_log_return"
REALIZED_VOL_1M: Estimator = "realized_vol_1m"
VolatilityFamily = Literal["naive", "har", "xgboost"]
TUNED_FAMILIES: tuple[VolatilityFamily, ...] = ("xgboost",)  # HAR has no hyper-parameter

FEATURE_TIME = "window_start"
NAIVE_VOL = "naive_vol"  # the naive forecast of each row: the trailing mean over the last H candles
MINUTE_S = 60
# E|r| = sqrt(2/pi) * sigma for normal r: puts realized volatility on the mean-absolute-return scale.
ABS_MOMENT = math.sqrt(2.0 / math.pi)


def volatility_windows(horizon: int) -> tuple[int, ...]:
    """The HAR windows plus the horizon itself (the naive forecast's window)."""
    return tuple(sorted(set(HAR_WINDOWS) | {horizon}))


def volatility_feature_names(horizon: int) -> list[str]:
    return har_feature_names(volatility_windows(horizon))


def naive_feature(horizon: int) -> str:
    return har_feature_names((horizon,))[0]


def abs_return_volatility(grid: pd.DataFrame) -> pd.Series:
    """Per-candle |log return| on a complete grid (NaN at and after a missing candle), the same series
    `volatility.volatility_inputs` is built from."""
    return absolute_returns(grid["close"].astype(float).where(~grid["missing"]))


def realized_volatility_1m(
    grid: pd.DataFrame, minutes: pd.DataFrame | None, interval_s: int
) -> pd.Series | None:
    """Per-candle sqrt(2/pi) * sqrt(sum of squared 1-minute log returns inside the candle), or None when
    some candle of the grid (other than the first, whose first return needs the minute before it) lacks
    one of its 1-minute returns: then the history is not covered and this estimator is not used.
    `minutes`: store rows of the 1-minute candles of the pair (window_start, close, gap, ...)."""
    if interval_s <= MINUTE_S or interval_s % MINUTE_S or minutes is None or minutes.empty:
        return None
    per_candle = interval_s // MINUTE_S
    minute_grid = complete_grid(minutes, MINUTE_S)
    closes = minute_grid["close"].astype(float).where(~minute_grid["missing"])
    returns = pd.Series(np.log(closes.to_numpy()), index=closes.index).diff()
    bucket = pd.DatetimeIndex(returns.index).floor(f"{interval_s}s")
    squared = (returns**2).groupby(bucket)
    known = returns.notna().groupby(bucket).sum()
    realized = squared.sum().reindex(grid.index).pow(0.5) * ABS_MOMENT
    covered = known.reindex(grid.index).fillna(0).eq(per_candle)
    needed = ~grid["missing"]
    needed.iloc[:1] = False
    if not covered[needed].all():
        return None
    return realized.where(covered & ~grid["missing"])


def candle_volatility(
    grid: pd.DataFrame, interval_s: int, minutes: pd.DataFrame | None = None
) -> tuple[pd.Series, Estimator]:
    """The per-candle volatility of a complete grid and the estimator that made it (module docstring)."""
    realized = realized_volatility_1m(grid, minutes, interval_s)
    if realized is not None:
        return realized, REALIZED_VOL_1M
    return abs_return_volatility(grid), MEAN_ABS_LOG_RETURN


@dataclass(frozen=True)
class VolatilityDataset:
    # FEATURE_TIME, the features, NAIVE_VOL and FUTURE_VOL (the target), in time order
    frame: pd.DataFrame
    features: list[str]
    estimator: Estimator
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(f"{self.estimator}:{','.join(self.frame.columns)}".encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]


def build_volatility_dataset(
    candles: pd.DataFrame, interval_s: int, horizon: int, minutes: pd.DataFrame | None = None
) -> VolatilityDataset:
    """`candles`: store rows of one (pair, interval); `minutes`: the pair's 1-minute store rows (used only
    for intervals above a minute). A row at t holds inputs known when candle t closes and the volatility
    of candles t+1 .. t+horizon; rows whose inputs or target touch a missing candle are dropped and
    counted, the newest rows waiting for their future are not drops."""
    grid = complete_grid(candles, interval_s)
    volatility, estimator = candle_volatility(grid, interval_s, minutes)
    windows = volatility_windows(horizon)
    inputs = har_features(volatility, windows)
    target = future_volatility(volatility, horizon)
    has_future = pd.Series(np.arange(len(grid)) < len(grid) - horizon, index=grid.index)
    real = ~grid["missing"] & has_future
    inputs_ok = inputs.notna().all(axis=1)
    target_ok = target.notna()
    keep = real & inputs_ok & target_ok
    frame = inputs[keep].copy()
    frame.insert(0, FEATURE_TIME, frame.index)
    frame[NAIVE_VOL] = np.exp(frame[naive_feature(horizon)])
    frame[FUTURE_VOL] = target[keep]
    return VolatilityDataset(
        frame=frame.reset_index(drop=True),
        features=list(inputs.columns),
        estimator=estimator,
        dropped={
            "inputs_warm_up_or_missing": int((real & ~inputs_ok).sum()),
            "target_touches_missing": int((real & inputs_ok & ~target_ok).sum()),
        },
    )


def log_target(frame: pd.DataFrame) -> np.ndarray:
    logs: np.ndarray = np.log(frame[FUTURE_VOL].clip(lower=FLOOR).to_numpy(dtype=float))
    return logs


def log_errors(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """log(forecast) - log(realized), both floored at FLOOR: the loss is their absolute value."""
    errors: np.ndarray = np.log(np.maximum(forecast, FLOOR)) - np.log(np.maximum(actual, FLOOR))
    return errors


def log_mae(forecast: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(log_errors(forecast, actual))))


def fit_family(family: str, params: dict[str, Any], frame: pd.DataFrame, features: list[str]) -> Any:
    """The fitted model of a family: None for naive, a HarModel without smearing, an XGBRegressor on
    the log target (the tuning module's, so tuned params mean the same here)."""
    if family == "naive":
        return None
    if family == "har":
        return replace(HarModel.fit(frame[features], frame[FUTURE_VOL]), smearing=1.0)
    if family == "xgboost":
        from cryptopredict.ml.tuning import fit_final

        return fit_final("xgboost", params, frame[features], log_target(frame))
    raise ValueError(f"unknown volatility family {family!r}")


def predict_family(
    family: str, model: Any, frame: pd.DataFrame, features: list[str], horizon: int
) -> np.ndarray:
    """Volatility forecasts of a fitted family (see pyfunc for the same in serving)."""
    forecast: np.ndarray
    if family == "naive":
        forecast = np.exp(frame[naive_feature(horizon)].to_numpy(dtype=float))
    elif family == "har":
        forecast = model.predict(frame[features]).to_numpy(dtype=float)
    else:
        forecast = np.exp(np.asarray(model.predict(frame[features]), dtype=float))
    return forecast


def cv_log_mae(
    family: str,
    params: dict[str, Any],
    fit: pd.DataFrame,
    features: list[str],
    folds: list[Fold],
    horizon: int,
) -> float:
    """Mean validation log-MAE over walk-forward folds (naive needs no fit, but is scored on the same
    blocks so the three families compare on equal terms)."""
    losses = []
    for fold in folds:
        train, validation = fit.iloc[fold.train], fit.iloc[fold.validation]
        model = fit_family(family, params, train, features)
        forecast = predict_family(family, model, validation, features, horizon)
        losses.append(log_mae(forecast, validation[FUTURE_VOL].to_numpy(dtype=float)))
    return float(np.mean(losses))


def invalid_forecast_reason(forecast: np.ndarray, who: str = "the challenger") -> str | None:
    """Why a volatility forecast cannot be served, or None: it must be finite and positive everywhere."""
    values = np.asarray(forecast, dtype=float)
    problems = {
        "NaN": int(np.isnan(values).sum()),
        "infinite": int(np.isinf(values).sum()),
        "zero": int((values == 0).sum()),
        "negative": int((values < 0).sum()),
    }
    found = [f"{n} {kind}" for kind, n in problems.items() if n]
    if not found:
        return None
    return f"refused: {who} forecast {', '.join(found)} volatilities on the {values.size} test rows"


def skill(model_mae: float, reference_mae: float) -> float:
    return 1.0 - model_mae / reference_mae if reference_mae > 0 else 0.0


def volatility_gate(
    *,
    challenger: np.ndarray,
    naive: np.ndarray,
    champion: np.ndarray | None,
    actual: np.ndarray,
    horizon_steps: int,
    alpha: float,
) -> GateDecision:
    """Promote only a valid forecast whose log-MAE is below the naive forecast's and the champion's (when
    the champion is not the naive model itself), each with a one-sided DM p-value below alpha. Reasons
    are the failed checks, or all checks when promoted; `dm_pvalue_vs_persistence` holds the p-value
    against the naive forecast (1.0 for a refused forecast)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    refusal = invalid_forecast_reason(challenger)
    if refusal is not None:
        return GateDecision(
            promote=False,
            reasons=[refusal],
            dm_pvalue_vs_persistence=1.0,
            dm_pvalue_vs_champion=None if champion is None else 1.0,
        )
    errors = log_errors(challenger, actual)
    checks: list[tuple[bool, str]] = []
    pvalues: list[float] = []
    references = [("the naive forecast", naive)] + (
        [("the champion", champion)] if champion is not None else []
    )
    for label, reference in references:
        reference_errors = log_errors(reference, actual)
        mae, reference_mae = float(np.mean(np.abs(errors))), float(np.mean(np.abs(reference_errors)))
        pvalue = diebold_mariano(errors, reference_errors, horizon_steps).pvalue
        pvalues.append(pvalue)
        below = mae < reference_mae
        checks.append(
            (
                below,
                f"log-MAE {mae:.4g} is {'' if below else 'not '}below {label}'s {reference_mae:.4g} "
                f"(skill {skill(mae, reference_mae):+.2%})",
            )
        )
        significant = pvalue < alpha
        checks.append(
            (
                significant,
                f"DM p-value vs {label} {pvalue:.3g} {'<' if significant else '>='} {alpha:g}: "
                + (
                    "the improvement is unlikely to be chance"
                    if significant
                    else "the difference could be chance"
                ),
            )
        )
    failures = [reason for passed, reason in checks if not passed]
    return GateDecision(
        promote=not failures,
        reasons=failures or [reason for _, reason in checks],
        dm_pvalue_vs_persistence=pvalues[0],
        dm_pvalue_vs_champion=pvalues[1] if champion is not None else None,
    )


def volatility_metrics(
    forecast: np.ndarray, naive: np.ndarray, actual: np.ndarray, dm_pvalue: float
) -> dict[str, float]:
    """The test-window figures of a valid forecast (MLflow metrics and the decision line)."""
    model_mae, naive_mae = log_mae(forecast, actual), log_mae(naive, actual)
    return {
        "n": float(actual.size),
        "vol_log_mae": model_mae,
        "vol_naive_log_mae": naive_mae,
        "vol_skill_vs_naive": skill(model_mae, naive_mae),
        "vol_dm_pvalue": dm_pvalue,
        "vol_log_bias": float(np.mean(log_errors(forecast, actual))),
        "vol_mae": float(np.mean(np.abs(forecast - actual))),
        "vol_naive_mae": float(np.mean(np.abs(naive - actual))),
    }
