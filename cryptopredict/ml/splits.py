"""Time-ordered train/validation splits that cannot leak the future into training.

A row at time t carries a target from t + horizon, so a training row whose target time reaches the
start of the window it is judged on already "saw" that window: such rows are purged. Purging is done
on timestamps rather than row counts because datasets have holes where rows were dropped, and a
fixed number of rows then means a varying span of time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

Times = pd.Series | pd.DatetimeIndex | np.ndarray


class Fold(NamedTuple):
    """Positional row indices (sorted) for one split."""

    train: np.ndarray
    validation: np.ndarray


def final_split(times: Times, test_fraction: float, horizon: timedelta) -> Fold:
    """Hold out the newest `test_fraction` of rows as the test window (returned as `validation`) and
    train on the older rows whose target time (t + horizon) is before the first test time."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    _require_positive(horizon)
    stamps = _as_datetime64(times)
    n = len(stamps)
    n_test = max(1, int(n * test_fraction))
    if n_test >= n:
        raise ValueError(f"{n} rows are too few to hold out {test_fraction:.0%} as a test window")
    train = _purged_before(stamps, n - n_test, _as_timedelta64(horizon))
    if len(train) == 0:
        raise ValueError(
            f"no training rows left: all {n - n_test} rows before the test window have targets inside it"
        )
    return Fold(train=train, validation=np.arange(n - n_test, n))


def walk_forward_folds(
    times: Times, n_folds: int, horizon: timedelta, embargo: timedelta, min_train_rows: int
) -> list[Fold]:
    """Expanding-window walk-forward over rows that all precede the final test window.

    The rows are cut into n_folds + 1 consecutive blocks; fold k validates on block k + 1 and trains
    on the rows before it, minus those with t + horizon + embargo >= the validation start. The embargo
    adds a margin for features or labels that smear across the boundary. Folds with fewer than
    `min_train_rows` training rows are skipped, so the early folds may be absent.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be at least 1, got {n_folds}")
    _require_positive(horizon)
    if embargo < timedelta(0):
        raise ValueError(f"embargo must not be negative, got {embargo}")
    stamps = _as_datetime64(times)
    if len(stamps) < n_folds + 1:
        raise ValueError(f"{len(stamps)} rows cannot be cut into {n_folds + 1} blocks")
    gap = _as_timedelta64(horizon) + _as_timedelta64(embargo)
    folds = []
    for block in np.array_split(np.arange(len(stamps)), n_folds + 1)[1:]:
        train = _purged_before(stamps, int(block[0]), gap)
        if len(train) >= min_train_rows:
            folds.append(Fold(train=train, validation=block))
    if not folds:
        raise ValueError(
            f"no fold has {min_train_rows} training rows: {len(stamps)} rows in {n_folds} folds are too few"
        )
    return folds


def _purged_before(stamps: np.ndarray, boundary: int, gap: np.timedelta64) -> np.ndarray:
    """Rows before position `boundary` whose time + gap is still strictly before the boundary time."""
    candidates = np.arange(boundary)
    rows: np.ndarray = candidates[stamps[:boundary] + gap < stamps[boundary]]
    return rows


def _require_positive(horizon: timedelta) -> None:
    if horizon <= timedelta(0):
        raise ValueError(f"horizon must be positive, got {horizon}")


def _as_datetime64(times: Times) -> np.ndarray:
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    if not index.is_monotonic_increasing:
        raise ValueError("times must be in increasing order")
    return index.to_numpy(dtype="datetime64[ns]")


def _as_timedelta64(span: timedelta) -> np.timedelta64:
    value: np.timedelta64 = pd.Timedelta(span).to_timedelta64().astype("timedelta64[ns]")
    return value
