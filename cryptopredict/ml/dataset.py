"""Supervised dataset from candles: lagged log-return features at t, log return from t to t + horizon.

Rows are aligned by timestamps, not row shifts: the target of the candle starting at t is the close of
the candle starting at t + horizon * interval. Rows whose feature window or target touches a gap
candle (or a missing row) are dropped and counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from cryptopredict.features.returns import feature_names, feature_row, log_return

TARGET = "target_log_return"
FEATURE_TIME = "window_start"
LAST_CLOSE = "close"


@dataclass(frozen=True)
class Dataset:
    frame: pd.DataFrame  # features, TARGET, FEATURE_TIME, LAST_CLOSE, target close
    features: list[str]
    dropped: int

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]


def build_dataset(candles: pd.DataFrame, interval_s: int, lags: int, horizon: int) -> Dataset:
    step = timedelta(seconds=interval_s)
    by_start = candles.set_index("window_start")
    closes, gaps = by_start["close"], by_start["gap"]
    starts = list(by_start.index)
    rows, dropped = [], 0
    for i in range(lags, len(starts)):
        t = starts[i]
        window = [t - step * k for k in range(lags, -1, -1)]
        target_t = t + step * horizon
        needed = [*window, target_t]
        if target_t > starts[-1]:
            break  # the future has not happened yet: not a drop
        if any(ts not in closes.index or bool(gaps[ts]) for ts in needed):
            dropped += 1
            continue
        window_closes = [float(closes[ts]) for ts in window]
        row: dict[str, object] = dict(feature_row(window_closes, lags))
        row[FEATURE_TIME] = t
        row[LAST_CLOSE] = window_closes[-1]
        row["target_close"] = float(closes[target_t])
        row[TARGET] = log_return(window_closes[-1], float(closes[target_t]))
        rows.append(row)
    frame = pd.DataFrame(
        rows, columns=[*feature_names(lags), FEATURE_TIME, LAST_CLOSE, "target_close", TARGET]
    )
    return Dataset(frame=frame, features=feature_names(lags), dropped=dropped)


def split_train_test(dataset: Dataset, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest `test_fraction` of rows is held out; training never sees it."""
    n_test = max(1, int(len(dataset.frame) * test_fraction))
    return dataset.frame.iloc[:-n_test], dataset.frame.iloc[-n_test:]
