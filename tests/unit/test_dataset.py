from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cryptopredict.features.returns import feature_row
from cryptopredict.ml.dataset import TARGET, build_dataset, split_train_test
from cryptopredict.ml.models import choose_champion, price_metrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def candles(closes, gaps=(), missing=()):
    rows = []
    for i, close in enumerate(closes):
        if i in missing:
            continue
        rows.append({"window_start": T0 + timedelta(minutes=i), "close": close, "gap": i in gaps})
    return pd.DataFrame(rows)


def test_feature_row_is_newest_first_and_refuses_warm_up():
    row = feature_row([100.0, 110.0, 121.0], lags=2)
    assert row["ret_lag_1"] == pytest.approx(np.log(1.1)) and list(row) == ["ret_lag_1", "ret_lag_2"]
    with pytest.raises(ValueError):
        feature_row([100.0, 110.0], lags=2)


def test_target_is_aligned_by_time_and_gaps_are_dropped():
    closes = [100.0 + i for i in range(20)]
    ds = build_dataset(candles(closes, gaps={8}, missing={14}), interval_s=60, lags=3, horizon=1)
    times = set(ds.frame["window_start"])
    # Rows whose window (t-3..t) or target (t+1) touches minute 8 or the missing minute 14 are gone.
    for t in range(3, 19):
        touches = any(m in (8, 14) for m in range(t - 3, t + 2))
        assert ((T0 + timedelta(minutes=t)) in times) == (not touches)
    row = ds.frame.iloc[0]
    assert row[TARGET] == pytest.approx(np.log(closes[4] / closes[3]))
    assert ds.dropped > 0


def test_split_keeps_the_newest_rows_for_test():
    ds = build_dataset(candles([100.0 + i for i in range(30)]), 60, 3, 1)
    train, test = split_train_test(ds, 0.2)
    assert train["window_start"].max() < test["window_start"].min()


def test_persistence_has_zero_skill_and_wins_ties():
    ds = build_dataset(candles([100.0 + (i % 3) for i in range(30)]), 60, 3, 1)
    metrics = price_metrics(ds.frame, np.zeros(len(ds.frame)))
    assert metrics["mae"] == metrics["persistence_mae"] and metrics["skill_vs_persistence"] == 0
    assert choose_champion({"xgboost": 1.0, "persistence": 1.0}) == "persistence"
    assert choose_champion({"xgboost": 0.9, "persistence": 1.0}) == "xgboost"
