"""Lagged log-return features of closed candles, and the log-return target.

`feature_row` is the single definition of a model input row: the prediction agent calls it on the
latest closes, and the training dataset calls it on every historical position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def feature_names(lags: int) -> list[str]:
    return [f"ret_lag_{k}" for k in range(1, lags + 1)]


def feature_row(closes: Sequence[float], lags: int) -> dict[str, float]:
    """Features at the last close: log returns of the `lags` most recent candles, newest first.

    Needs `lags + 1` closes; raises ValueError with fewer, so a caller can never predict on warm-up.
    """
    if len(closes) < lags + 1:
        raise ValueError(f"need {lags + 1} closes for {lags} lagged returns, got {len(closes)}")
    recent = closes[-(lags + 1) :]
    returns = [math.log(recent[i + 1] / recent[i]) for i in range(lags)]
    return dict(zip(feature_names(lags), reversed(returns), strict=True))


def log_return(from_price: float, to_price: float) -> float:
    return math.log(to_price / from_price)
