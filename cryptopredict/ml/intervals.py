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


def conformal_offsets(residuals: npt.ArrayLike, coverage: float) -> tuple[float, float]:
    """(lower, upper) such that [pred + lower, pred + upper] covers `coverage` of future residuals.

    Each tail gets (1 - coverage) / 2. With q = 1 - tail and n residuals, the upper offset is the
    k-th smallest residual, k = ceil((n + 1) * q) (the conformal quantile at level k / n), and the
    lower offset is the (n + 1 - k)-th smallest, its mirror image; both are wider than the plain
    empirical quantiles. k is clipped to n, so with very few residuals (n + 1 < 1 / tail) the interval
    is the observed range and the guarantee no longer holds.
    """
    values = np.asarray(residuals, dtype=float)
    if values.size == 0:
        raise ValueError("no residuals to calibrate on")
    if not np.all(np.isfinite(values)):
        raise ValueError("residuals contain NaN or infinite values")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    n = values.size
    k = min(n, math.ceil((n + 1) * (1.0 + coverage) / 2.0))
    ordered = np.sort(values)
    lower, upper = float(ordered[n - k]), float(ordered[k - 1])
    return lower, upper


def interval_coverage(actual: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike) -> float:
    """Fraction of `actual` values inside [lower, upper], bounds included."""
    values, low, high = (np.asarray(a, dtype=float) for a in (actual, lower, upper))
    if values.size == 0:
        raise ValueError("no values to measure coverage on")
    if not values.shape == low.shape == high.shape:
        raise ValueError(f"shapes differ: actual {values.shape}, lower {low.shape}, upper {high.shape}")
    return float(np.mean((values >= low) & (values <= high)))
