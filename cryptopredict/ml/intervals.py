"""Split-conformal prediction intervals on log-return residuals.

Offsets come from out-of-sample residuals (actual - predicted on a validation window the model never
trained on), so they carry the model's real error rather than its in-sample fit. The conformal
correction widens the empirical quantiles slightly so that coverage holds for a finite sample, and
the two tails are estimated separately because return residuals need not be symmetric.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats


# Not mapie's SplitConformalRegressor: it needs a fitted sklearn estimator and its inputs, while the
# walk-forward folds and the stored quantile grid need only ranks of residuals already at hand, per tail,
# per regime (mapie has no Mondrian split) and at many levels. tests/unit/test_reference_libraries.py
# checks these ranks against it (signed scores for the two tails, absolute ones for conformal_quantile).
def conformal_offsets(residuals: npt.ArrayLike, coverage: float) -> tuple[float, float]:
    """(lower, upper) such that [pred + lower, pred + upper] covers `coverage` of future residuals.

    Each tail gets (1 - coverage) / 2. With q = 1 - tail and n residuals, the upper offset is the
    k-th smallest residual, k = ceil((n + 1) * q) (the conformal quantile at level k / n), and the
    lower offset is the (n + 1 - k)-th smallest, its mirror image; both are wider than the plain
    empirical quantiles. k is clipped to n, so with very few residuals (n + 1 < 1 / tail) the interval
    is the observed range and the guarantee no longer holds.
    """
    values = _finite_residuals(residuals)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    n = values.size
    k = min(n, _rank((n + 1) * (1.0 + coverage) / 2.0))
    ordered = np.sort(values)
    lower, upper = float(ordered[n - k]), float(ordered[k - 1])
    return lower, upper


def conformal_quantile(residuals: npt.ArrayLike, level: float) -> float:
    """The conformal `level` quantile of the residuals: the k-th smallest with k = ceil((n + 1) * level)
    above the median, and its mirror image below it, as `conformal_offsets` takes its two tails."""
    values = np.sort(_finite_residuals(residuals))
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = values.size
    upper_tail = max(level, 1.0 - level)
    k = min(n, _rank((n + 1) * upper_tail))
    return float(values[k - 1] if level >= 0.5 else values[n - k])


def interval_coverage(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike) -> float:
    """Fraction of `actual` values inside [lower, upper], bounds included."""
    values, low, high = (np.asarray(a, dtype=float) for a in (actual, lower, upper))
    if values.size == 0:
        raise ValueError("no values to measure coverage on")
    if not values.shape == low.shape == high.shape:
        raise ValueError(f"shapes differ: actual {values.shape}, lower {low.shape}, upper {high.shape}")
    return float(np.mean((values >= low) & (values <= high)))


# --- intervals that adapt to volatility, and how to judge them -----------------------------------

REGIMES = ("calm", "mid", "wild")


def regime_cut_points(trailing_volatility: npt.ArrayLike) -> tuple[float, float]:
    """The terciles of trailing volatility on the calibration window: fixed there, then applied to
    whatever comes later, so a forecast's regime is known when it is made."""
    values = _finite_values(trailing_volatility)
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    return float(low), float(high)


def regime_of(trailing_volatility: npt.ArrayLike, cuts: tuple[float, float]) -> np.ndarray:
    """0 (calm), 1 (mid) or 2 (wild) for each value, by the cut points."""
    return np.searchsorted(np.asarray(cuts), np.asarray(trailing_volatility, dtype=float), side="right")


def mondrian_quantiles(
    scaled_residuals: npt.ArrayLike, regimes: npt.ArrayLike, levels: list[float]
) -> dict[int, list[float]]:
    """Conformal quantiles of residuals divided by the volatility forecast at each of `levels`, apart
    per regime (Mondrian conformal prediction): each regime's coverage holds on its own, not just on
    average."""
    values, groups = np.asarray(scaled_residuals, dtype=float), np.asarray(regimes)
    if values.shape != groups.shape:
        raise ValueError(f"shapes differ: residuals {values.shape}, regimes {groups.shape}")
    return {
        int(g): [conformal_quantile(values[groups == g], level) for level in levels]
        for g in np.unique(groups)
    }


def winkler_score(
    actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike, coverage: float
) -> float:
    """Mean interval score (Winkler 1972; Gneiting & Raftery 2007): width, plus 2 / alpha times how far
    an outcome falls outside. Lower is better; it rewards narrow intervals that still cover."""
    values, low, high = (np.asarray(a, dtype=float) for a in (actual, lower, upper))
    alpha = 1.0 - coverage
    below, above = np.clip(low - values, 0, None), np.clip(values - high, 0, None)
    return float(np.mean((high - low) + 2.0 / alpha * (below + above)))


def pinball_loss(actual: npt.ArrayLike, predicted_quantile: npt.ArrayLike, level: float) -> float:
    """Mean quantile (pinball) loss of a forecast of the `level` quantile."""
    difference = np.asarray(actual, dtype=float) - np.asarray(predicted_quantile, dtype=float)
    return float(np.mean(np.maximum(level * difference, (level - 1.0) * difference)))


def kupiec_pvalue(inside: npt.ArrayLike, coverage: float) -> float:
    """Kupiec's unconditional coverage test: p-value of 'the share of outcomes inside is `coverage`'
    (likelihood ratio, chi-squared with 1 degree of freedom). Small: the interval misses too often or
    too seldom."""
    hits = np.asarray(inside, dtype=bool)
    return kupiec_pvalue_of_counts(hits.size, int(np.sum(~hits)), coverage)


def kupiec_pvalue_of_counts(n: int, misses: int, coverage: float) -> float:
    """Kupiec's test from the number of outcomes and of misses (what a SQL aggregate gives)."""
    if n == 0:
        raise ValueError("no outcomes to test")
    p, observed = 1.0 - coverage, misses / n
    ratio = -2.0 * (_bernoulli_log_likelihood(misses, n, p) - _bernoulli_log_likelihood(misses, n, observed))
    return float(stats.chi2.sf(max(ratio, 0.0), df=1))


def christoffersen_pvalue(inside: npt.ArrayLike) -> float:
    """Christoffersen's independence test: p-value of 'a miss is as likely after a miss as after a
    hit'. Small: misses come in clusters, as they do when an interval ignores volatility."""
    misses = ~np.asarray(inside, dtype=bool)
    previous, current = misses[:-1], misses[1:]
    return christoffersen_pvalue_of_counts(
        int(np.sum(~previous & ~current)),
        int(np.sum(~previous & current)),
        int(np.sum(previous & ~current)),
        int(np.sum(previous & current)),
    )


def christoffersen_pvalue_of_counts(n00: int, n01: int, n10: int, n11: int) -> float:
    """Christoffersen's test from the transition counts: n01 is a hit followed by a miss, and so on."""
    if n00 + n01 == 0 or n10 + n11 == 0:
        return 1.0  # all hits or all misses: no transitions to compare
    pi0, pi1 = n01 / (n00 + n01), n11 / (n10 + n11)
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    independent = _bernoulli_log_likelihood(n01 + n11, n00 + n01 + n10 + n11, pi)
    markov = _bernoulli_log_likelihood(n01, n00 + n01, pi0) + _bernoulli_log_likelihood(n11, n10 + n11, pi1)
    return float(stats.chi2.sf(max(-2.0 * (independent - markov), 0.0), df=1))


def _bernoulli_log_likelihood(successes: int, n: int, p: float) -> float:
    # 0 * log(0) counts as 0: a probability of exactly 0 or 1 that matches the data loses nothing.
    failures = n - successes
    return (successes * math.log(p) if successes else 0.0) + (failures * math.log1p(-p) if failures else 0.0)


# Not mapie's TimeSeriesRegressor.adapt_conformal_inference: it keeps alpha inside a fitted estimator
# and judges each outcome by re-predicting its interval, while the streaming path applies a stateless
# step to misses read from the outcome ledger (store.adaptation). tests/unit/test_reference_libraries.py
# checks this step against mapie's alpha, outcome by outcome.
def aci_update(alpha: float, misses: npt.ArrayLike, target_alpha: float, gamma: float) -> float:
    """Adaptive conformal inference (Gibbs & Candes 2021): after each outcome the miscoverage level used
    moves by gamma * (target_alpha - miss), so a run of misses widens the interval and a run of hits
    narrows it until the observed coverage is the nominal one again. Clipped to [0.005, 0.995]: outside,
    the calibration quantiles give no interval."""
    for miss in np.asarray(misses, dtype=bool):
        alpha = min(0.995, max(0.005, alpha + gamma * (target_alpha - float(miss))))
    return alpha


def _rank(position: float) -> int:
    """ceil of a rank computed in floating point, rounded first: 25 * 0.56 is 14.000000000000002, and
    its ceiling would take one order statistic more than the conformal rule asks."""
    return math.ceil(round(position, 9))


def _finite_residuals(residuals: npt.ArrayLike) -> np.ndarray:
    values = np.asarray(residuals, dtype=float)
    if values.size == 0:
        raise ValueError("no residuals to calibrate on")
    if not np.all(np.isfinite(values)):
        raise ValueError("residuals contain NaN or infinite values")
    return values


def _finite_values(values: npt.ArrayLike) -> np.ndarray:
    array: np.ndarray = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise ValueError("no finite values")
    return array
