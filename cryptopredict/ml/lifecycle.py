"""The steps of a retrain on a dataset frame, as plain functions; the Temporal activities call them.

Time is split once: the newest `test_fraction` of rows is the final test window, untouched until the
challenger is evaluated; everything before it (purged of rows whose target reaches into the test
window) is cut into walk-forward folds for screening, tuning and calibrating the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from cryptopredict.ml.adaptive import Calibration, calibrate, interval_report
from cryptopredict.ml.dataset import FEATURE_TIME, LAST_CLOSE, TARGET, TARGET_CLOSE
from cryptopredict.ml.evaluation import (
    ForecastMetrics,
    GateDecision,
    evaluate_forecast,
    price_errors,
    promotion_gate,
)
from cryptopredict.ml.intervals import conformal_offsets
from cryptopredict.ml.splits import Fold, final_split, walk_forward_folds
from cryptopredict.ml.tuning import fit_final


@dataclass(frozen=True)
class Split:
    fit: pd.DataFrame  # rows before the test window, purged: screening, tuning, the final fit
    test: pd.DataFrame  # the newest rows: evaluation only
    folds: list[Fold]  # walk-forward folds over `fit`, purged and embargoed by the horizon


def split(
    frame: pd.DataFrame, test_fraction: float, horizon: timedelta, n_folds: int, min_train_rows: int
) -> Split:
    times = frame[FEATURE_TIME]
    holdout = final_split(times, test_fraction, horizon)
    fit = frame.iloc[holdout.train].reset_index(drop=True)
    test = frame.iloc[holdout.validation].reset_index(drop=True)
    folds = walk_forward_folds(
        fit[FEATURE_TIME], n_folds, horizon, embargo=horizon, min_train_rows=min_train_rows
    )
    return Split(fit=fit, test=test, folds=folds)


def recent_rows(folds: list[Fold], max_rows: int) -> list[Fold]:
    """The folds with each training set cut to its `max_rows` most recent rows: what tuning and interval
    calibration fit on, so a year of minutes costs minutes, not hours (the final fit uses every row)."""
    return [Fold(train=fold.train[-max_rows:], validation=fold.validation) for fold in folds]


def out_of_fold_residuals(
    family: str, params: dict[str, Any], fit: pd.DataFrame, features: list[str], folds: list[Fold]
) -> np.ndarray:
    """Residuals (actual - predicted log return) of the tuned model on every validation block, each
    predicted by a model that never saw it: what the interval is calibrated on."""
    residuals = []
    for fold in folds:
        train, validation = fit.iloc[fold.train], fit.iloc[fold.validation]
        model = fit_final(family, params, train[features], train[TARGET].to_numpy())
        predicted = np.asarray(model.predict(validation[features]), dtype=float)
        residuals.append(validation[TARGET].to_numpy() - predicted)
    return np.concatenate(residuals)


def calibration_rows(folds: list[Fold]) -> np.ndarray:
    """Positions in `fit` of the validation blocks, in the order out_of_fold_residuals returns them."""
    return np.concatenate([np.asarray(fold.validation) for fold in folds])


def calibrate_intervals(data: Split, residuals: np.ndarray, horizon_candles: int) -> Calibration:
    """Constant and adaptive intervals of out-of-fold residuals. The HAR scale is fitted on the rows
    before the first validation block whose future volatility ends before it, so it never saw the
    residuals it scales."""
    rows = calibration_rows(data.folds)
    first = int(rows.min())
    return calibrate(residuals, data.fit.iloc[rows], data.fit.iloc[: max(0, first - horizon_candles)])


def persistence_calibration(data: Split, horizon_candles: int) -> Calibration:
    """The persistence model's intervals: its residuals are the returns themselves, on the same rows a
    challenger is calibrated on."""
    residuals = data.fit[TARGET].to_numpy()[calibration_rows(data.folds)]
    return calibrate_intervals(data, residuals, horizon_candles)


@dataclass(frozen=True)
class ChallengerEvaluation:
    model: Any  # fitted on all of `fit`
    interval: tuple[float, float]  # constant-width conformal offsets in log-return space
    calibration: Calibration  # constant and adaptive intervals, as the model carries them
    intervals: dict[str, float]  # adaptive against constant-width on the test window (interval_report)
    predicted: np.ndarray  # log returns over the test window
    metrics: ForecastMetrics
    errors: np.ndarray  # price errors over the test window
    persistence_errors: np.ndarray


def evaluate_challenger(
    family: str,
    params: dict[str, Any],
    data: Split,
    features: list[str],
    coverage: float,
    max_rows: int,
    horizon_candles: int,
    quantile_levels: list[float],
) -> ChallengerEvaluation:
    folds = recent_rows(data.folds, max_rows)
    residuals = out_of_fold_residuals(family, params, data.fit, features, folds)
    interval = conformal_offsets(residuals, coverage)
    calibration = calibrate_intervals(data, residuals, horizon_candles)
    model = fit_final(family, params, data.fit[features], data.fit[TARGET].to_numpy())
    test = data.test
    predicted = np.asarray(model.predict(test[features]), dtype=float)
    close, target_close = test[LAST_CLOSE].to_numpy(), test[TARGET_CLOSE].to_numpy()
    metrics = evaluate_forecast(
        close, target_close, predicted, predicted + interval[0], predicted + interval[1]
    )
    intervals = interval_report(test[TARGET], predicted, calibration, test, coverage, quantile_levels)
    return ChallengerEvaluation(
        model=model,
        interval=interval,
        calibration=calibration,
        intervals=intervals,
        predicted=predicted,
        metrics=metrics,
        errors=price_errors(close, target_close, predicted),
        persistence_errors=price_errors(close, target_close, np.zeros(len(test))),
    )


def gate(
    challenger: ChallengerEvaluation,
    champion_predicted: np.ndarray | None,
    test: pd.DataFrame,
    horizon_candles: int,
    alpha: float,
    max_plausible_skill: float,
    min_skill: float = 0.0,
) -> GateDecision:
    """`champion_predicted`: the champion's log returns over the test window, None when the champion is
    persistence (then beating persistence is beating the champion)."""
    champion_errors = None
    if champion_predicted is not None:
        champion_errors = price_errors(
            test[LAST_CLOSE].to_numpy(), test[TARGET_CLOSE].to_numpy(), champion_predicted
        )
    return promotion_gate(
        challenger_errors=challenger.errors,
        persistence_errors=challenger.persistence_errors,
        champion_errors=champion_errors,
        horizon_steps=horizon_candles,
        alpha=alpha,
        max_plausible_skill=max_plausible_skill,
        min_skill=min_skill,
    )
