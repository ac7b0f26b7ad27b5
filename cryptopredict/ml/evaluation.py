"""Forecast evaluation and the promotion gate.

Crypto prices at short horizons are close to a random walk, so "the price stays" (persistence) is a
hard baseline and most apparent improvements over it are noise. Errors are measured on price, and a
challenger is promoted only if it beats persistence (and the current champion) by a margin that a
Diebold-Mariano test says is unlikely to be chance. A skill far above what is plausible at these
horizons is treated as a symptom of look-ahead leakage rather than as a great model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

from cryptopredict.ml.intervals import interval_coverage


@dataclass(frozen=True)
class ForecastMetrics:
    """Price-space errors of a forecast and of persistence on the same rows.

    direction_accuracy and direction_base_rate only count rows where the price moved; they are NaN
    when it never did. The interval fields are None when no interval was given.
    """

    n: int
    mae: float
    rmse: float
    persistence_mae: float
    persistence_rmse: float
    skill_vs_persistence: float
    direction_accuracy: float
    direction_base_rate: float
    interval_coverage: float | None
    mean_interval_width_price: float | None

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items() if value is not None}


class DieboldMariano(NamedTuple):
    statistic: float
    pvalue: float


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    dm_pvalue_vs_persistence: float
    dm_pvalue_vs_champion: float | None


def price_errors(
    close: npt.ArrayLike, target_close: npt.ArrayLike, predicted_log_return: npt.ArrayLike
) -> np.ndarray:
    """Predicted price (close * exp(predicted log return)) minus the price that happened."""
    last, actual, predicted = _aligned(close, target_close, predicted_log_return)
    errors: np.ndarray = last * np.exp(predicted) - actual
    return errors


def evaluate_forecast(
    close: npt.ArrayLike,
    target_close: npt.ArrayLike,
    predicted_log_return: npt.ArrayLike,
    lower_log_return: npt.ArrayLike | None = None,
    upper_log_return: npt.ArrayLike | None = None,
) -> ForecastMetrics:
    """Metrics on price; interval bounds are log returns and become prices as close * exp(bound)."""
    last, actual, predicted = _aligned(close, target_close, predicted_log_return)
    errors = last * np.exp(predicted) - actual
    persistence = last - actual
    mae, persistence_mae = _mae(errors), _mae(persistence)
    accuracy, base_rate = _direction_scores(last, actual, predicted)
    coverage, width = _price_interval(last, actual, lower_log_return, upper_log_return)
    return ForecastMetrics(
        n=len(errors),
        mae=mae,
        rmse=_rmse(errors),
        persistence_mae=persistence_mae,
        persistence_rmse=_rmse(persistence),
        skill_vs_persistence=_skill(mae, persistence_mae),
        direction_accuracy=accuracy,
        direction_base_rate=base_rate,
        interval_coverage=coverage,
        mean_interval_width_price=width,
    )


def diebold_mariano(
    errors_challenger: npt.ArrayLike, errors_reference: npt.ArrayLike, horizon_steps: int, power: int = 1
) -> DieboldMariano:
    """Diebold-Mariano test with the Harvey-Leybourne-Newbold small-sample correction.

    The loss differential is d = |e_challenger|^power - |e_reference|^power, so a NEGATIVE statistic
    means the challenger has the lower loss. The p-value is one-sided for H1 "the challenger has lower
    expected loss" (Student t, n - 1 degrees of freedom): small only when the challenger is better.
    Errors of h-step forecasts made every step overlap, so d is autocorrelated up to lag h - 1; its
    long-run variance uses those lags with rectangular weights, or Bartlett (Newey-West) weights when
    the rectangular estimate is not positive. Identical losses give statistic 0 and p-value 1.
    """
    challenger, reference = _finite(errors_challenger), _finite(errors_reference)
    if challenger.shape != reference.shape:
        raise ValueError(f"error arrays differ in shape: {challenger.shape} vs {reference.shape}")
    if horizon_steps < 1 or power < 1:
        raise ValueError(f"horizon_steps and power must be at least 1, got {horizon_steps} and {power}")
    n, h = challenger.size, horizon_steps
    if n <= h:
        raise ValueError(f"{n} errors are too few for a {h}-step Diebold-Mariano test")
    loss_differential = np.abs(challenger) ** power - np.abs(reference) ** power
    if not np.any(loss_differential):
        return DieboldMariano(statistic=0.0, pvalue=1.0)
    mean = float(np.mean(loss_differential))
    variance_of_mean = _long_run_variance(loss_differential, lags=h - 1) / n
    if variance_of_mean <= 0.0:
        # A constant, non-zero differential: the sign is certain.
        return DieboldMariano(statistic=math.copysign(math.inf, mean), pvalue=0.0 if mean < 0 else 1.0)
    correction = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    statistic = correction * mean / math.sqrt(variance_of_mean)
    return DieboldMariano(statistic=statistic, pvalue=float(stats.t.cdf(statistic, df=n - 1)))


def promotion_gate(
    *,
    challenger_errors: npt.ArrayLike,
    persistence_errors: npt.ArrayLike,
    champion_errors: npt.ArrayLike | None,
    horizon_steps: int,
    alpha: float,
    max_plausible_skill: float,
    min_skill: float = 0.0,
) -> GateDecision:
    """Promote the challenger only if it beats persistence and the champion (when the champion is not
    persistence itself) on price MAE by more than `min_skill`, each with a one-sided DM p-value below
    alpha, and its skill over persistence is not implausibly high. Reasons are the failed checks, or all
    checks when promoted.

    `min_skill` is the smallest improvement worth a model: on a hundred thousand test rows the DM test
    finds a gain of 0.001% significant, the size a lucky drift of a random walk gives a model that only
    learnt the mean return.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    challenger = _finite(challenger_errors)
    challenger_mae = _mae(challenger)
    persistence = _finite(persistence_errors)
    persistence_mae = _mae(persistence)
    dm_persistence = diebold_mariano(challenger, persistence, horizon_steps).pvalue
    checks = [
        _mae_check(challenger_mae, persistence_mae, "persistence", min_skill),
        _dm_check(dm_persistence, alpha, "persistence"),
        _plausibility_check(_skill(challenger_mae, persistence_mae), max_plausible_skill),
    ]
    dm_champion = None
    if champion_errors is not None:
        champion = _finite(champion_errors)
        dm_champion = diebold_mariano(challenger, champion, horizon_steps).pvalue
        checks += [
            _mae_check(challenger_mae, _mae(champion), "the champion", min_skill),
            _dm_check(dm_champion, alpha, "the champion"),
        ]
    failures = [reason for passed, reason in checks if not passed]
    return GateDecision(
        promote=not failures,
        reasons=failures or [reason for _, reason in checks],
        dm_pvalue_vs_persistence=dm_persistence,
        dm_pvalue_vs_champion=dm_champion,
    )


def _mae_check(mae: float, reference_mae: float, reference: str, min_skill: float) -> tuple[bool, str]:
    skill = _skill(mae, reference_mae)
    shown = f"skill {skill:+.2%}" if skill == 0 or abs(skill) >= 1e-4 else f"skill {skill:+.2e}"
    if mae < reference_mae and skill > min_skill:
        return True, f"MAE {mae:.6g} is below {reference}'s {reference_mae:.6g} ({shown})"
    if mae < reference_mae:
        return False, (
            f"MAE {mae:.6g} is below {reference}'s {reference_mae:.6g}, but by too little to matter"
            f" ({shown}; model.min_skill is {min_skill:.2%})"
        )
    return False, f"MAE {mae:.6g} is not below {reference}'s {reference_mae:.6g} ({shown})"


def _dm_check(pvalue: float, alpha: float, reference: str) -> tuple[bool, str]:
    if pvalue < alpha:
        return (
            True,
            f"DM p-value vs {reference} {pvalue:.3g} < {alpha:g}: the improvement is unlikely to be chance",
        )
    return False, f"DM p-value vs {reference} {pvalue:.3g} >= {alpha:g}: the difference could be chance"


def _plausibility_check(skill: float, max_plausible_skill: float) -> tuple[bool, str]:
    if skill <= max_plausible_skill:
        return (
            True,
            f"skill vs persistence {skill:+.2%} is within the plausible maximum {max_plausible_skill:.2%}",
        )
    return False, (
        f"skill vs persistence {skill:+.2%} exceeds the plausible maximum {max_plausible_skill:.2%} "
        "at this horizon: that points to look-ahead leakage, not to a better model"
    )


def _long_run_variance(values: np.ndarray, lags: int) -> float:
    centred = values - values.mean()
    n = values.size
    autocovariances = np.array([centred[k:] @ centred[: n - k] / n for k in range(lags + 1)])
    rectangular = float(autocovariances[0] + 2.0 * autocovariances[1:].sum())
    if rectangular > 0.0:
        return rectangular
    bartlett = 1.0 - np.arange(1, lags + 1) / (lags + 1)
    return float(autocovariances[0] + 2.0 * bartlett @ autocovariances[1:])


def _direction_scores(last: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    moved = np.sign(actual - last)
    moving = moved != 0
    if not moving.any():
        return math.nan, math.nan
    accuracy = float(np.mean(np.sign(predicted[moving]) == moved[moving]))
    up_share = float(np.mean(moved[moving] > 0))
    return accuracy, max(up_share, 1.0 - up_share)


def _price_interval(
    last: np.ndarray,
    actual: np.ndarray,
    lower_log_return: npt.ArrayLike | None,
    upper_log_return: npt.ArrayLike | None,
) -> tuple[float | None, float | None]:
    if lower_log_return is None and upper_log_return is None:
        return None, None
    if lower_log_return is None or upper_log_return is None:
        raise ValueError("give both interval bounds or neither")
    lower = last * np.exp(_finite(lower_log_return))
    upper = last * np.exp(_finite(upper_log_return))
    return interval_coverage(actual, lower, upper), float(np.mean(upper - lower))


def _aligned(
    close: npt.ArrayLike, target_close: npt.ArrayLike, predicted_log_return: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    last, actual, predicted = _finite(close), _finite(target_close), _finite(predicted_log_return)
    if not last.shape == actual.shape == predicted.shape:
        raise ValueError(
            f"lengths differ: close {last.shape}, target_close {actual.shape}, "
            f"predicted_log_return {predicted.shape}"
        )
    if np.any(last <= 0) or np.any(actual <= 0):
        raise ValueError("prices must be positive")
    return last, actual, predicted


def _finite(values: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values contain NaN or infinite entries")
    return array


def _mae(errors: np.ndarray) -> float:
    return float(np.mean(np.abs(errors)))


def _rmse(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(errors**2)))


def _skill(mae: float, reference_mae: float) -> float:
    return 1.0 - mae / reference_mae if reference_mae > 0 else 0.0
