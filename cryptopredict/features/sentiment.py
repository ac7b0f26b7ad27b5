"""Point-in-time sentiment features per coin: what was known at time t, never later.

For each feature time t and window w: the confidence-weighted mean score and the number of scores with
t - w < scored_at <= t. A score made after t (even about older news) never enters the features at t,
so training rows see exactly what the live path saw.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

SENTIMENT_WINDOWS: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}


def sentiment_features(
    scores: pd.DataFrame, times: pd.DatetimeIndex, windows: dict[str, timedelta] = SENTIMENT_WINDOWS
) -> pd.DataFrame:
    """`scores` has columns scored_at (UTC), score (-1, 0, 1) and confidence (0..1); returns one row per
    time with `sentiment_mean_<w>` (NaN when nothing was scored in the window) and `sentiment_count_<w>`."""
    ordered = scores.sort_values("scored_at")
    at = pd.DatetimeIndex(ordered["scored_at"]).as_unit("ns").asi8
    weight = ordered["confidence"].to_numpy(dtype=float)
    weighted = weight * ordered["score"].to_numpy(dtype=float)
    # Prefix sums with a leading zero: the sum over rows [i, j) is cum[j] - cum[i].
    cum_weight = np.concatenate([[0.0], np.cumsum(weight)])
    cum_weighted = np.concatenate([[0.0], np.cumsum(weighted)])
    t = times.as_unit("ns").asi8
    upto = np.searchsorted(at, t, side="right")  # scores with scored_at <= t
    frame = pd.DataFrame(index=times)
    for name, window in windows.items():
        start = np.searchsorted(at, t - int(window.total_seconds() * 1e9), side="right")  # > t - window
        total_weight = cum_weight[upto] - cum_weight[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(
                total_weight > 0, (cum_weighted[upto] - cum_weighted[start]) / total_weight, np.nan
            )
        frame[f"sentiment_mean_{name}"] = mean
        frame[f"sentiment_count_{name}"] = upto - start
    return frame
