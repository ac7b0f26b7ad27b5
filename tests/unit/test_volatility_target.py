"""The volatility target: its two estimators (never mixed), the dataset without look-ahead, the three
model families and the gate that refuses NaN, infinite, zero and negative forecasts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cryptopredict.features.model_inputs import complete_grid
from cryptopredict.ml import volatility_target as vt
from cryptopredict.ml.splits import walk_forward_folds
from cryptopredict.ml.volatility import FUTURE_VOL, har_feature_names, volatility_inputs

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def candles(closes: np.ndarray, interval_s: int, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    starts = [T0 + timedelta(seconds=interval_s * i) for i in range(len(closes))]
    frame = pd.DataFrame({"window_start": starts, "close": closes, "gap": False})
    return frame.drop(index=list(drop)).reset_index(drop=True)


def clustered_walk(n: int, seed: int = 0) -> np.ndarray:
    """Closes whose volatility moves slowly (a log-AR(1) scale): something HAR can forecast."""
    rng = np.random.default_rng(seed)
    log_sigma = np.empty(n)
    log_sigma[0] = math.log(0.002)
    for i in range(1, n):
        log_sigma[i] = math.log(0.002) + 0.98 * (log_sigma[i - 1] - math.log(0.002)) + rng.normal(0, 0.15)
    returns = np.exp(log_sigma) * rng.standard_normal(n)
    return 30_000.0 * np.exp(np.cumsum(returns))


def test_one_minute_targets_use_the_absolute_returns_the_live_inputs_are_built_from() -> None:
    rows = candles(clustered_walk(400), 60, drop=(250,))
    grid = complete_grid(rows, 60)
    volatility, estimator = vt.candle_volatility(grid, 60, minutes=rows)
    assert estimator == vt.MEAN_ABS_LOG_RETURN
    expected = np.log(grid["close"]).diff().abs()
    expected[grid.index[250]] = np.nan  # the missing candle and the one after it have no return
    expected[grid.index[251]] = np.nan
    pd.testing.assert_series_equal(volatility, expected, check_names=False)
    # The HAR windows computed from it are exactly the live path's volatility_inputs.
    dataset = vt.build_volatility_dataset(rows, 60, horizon=1)
    live = volatility_inputs(grid).set_index(grid.index)
    mine = dataset.frame.set_index(vt.FEATURE_TIME)
    for name in har_feature_names():
        np.testing.assert_allclose(mine[name], live.loc[mine.index, name])


def test_five_minute_targets_use_the_realized_volatility_of_their_minutes() -> None:
    minute_closes = clustered_walk(5 * 300 + 1, seed=1)
    minutes = candles(minute_closes, 60)
    # The 5-minute candle starting at minute 5k closes at minute 5k + 4.
    five = candles(minute_closes[4::5], 300)
    grid = complete_grid(five, 300)
    volatility, estimator = vt.candle_volatility(grid, 300, minutes)
    assert estimator == vt.REALIZED_VOL_1M
    minute_returns = np.diff(np.log(minute_closes))
    k = 7  # candle 7 covers minutes 35..39: the returns into each of them
    expected = math.sqrt(2 / math.pi) * math.sqrt(np.sum(minute_returns[34:39] ** 2))
    assert volatility.iloc[k] == pytest.approx(expected)
    # The same scale as the candle's absolute return: both estimate E|r| per candle.
    ratio = volatility.iloc[1:].mean() / vt.abs_return_volatility(grid).iloc[1:].mean()
    assert 0.8 < ratio < 1.25


def test_one_missing_minute_makes_the_whole_history_use_the_candles_own_returns() -> None:
    minute_closes = clustered_walk(5 * 300 + 1, seed=2)
    five = candles(minute_closes[4::5], 300)
    minutes = candles(minute_closes, 60, drop=(600,))
    dataset = vt.build_volatility_dataset(five, 300, horizon=2, minutes=minutes)
    assert dataset.estimator == vt.MEAN_ABS_LOG_RETURN
    assert (
        vt.build_volatility_dataset(five, 300, 2, candles(minute_closes, 60)).estimator == vt.REALIZED_VOL_1M
    )
    assert vt.build_volatility_dataset(five, 300, 2, None).estimator == vt.MEAN_ABS_LOG_RETURN


def test_the_dataset_pairs_known_inputs_with_the_next_h_candles_and_counts_drops() -> None:
    horizon = 3
    rows = candles(clustered_walk(600, seed=3), 60, drop=(400,))
    grid = complete_grid(rows, 60)
    per_candle, _ = vt.candle_volatility(grid, 60)
    dataset = vt.build_volatility_dataset(rows, 60, horizon)
    assert dataset.features == har_feature_names((1, 3, 6, 24, 168))
    frame = dataset.frame.set_index(vt.FEATURE_TIME)
    t = frame.index[100]
    i = grid.index.get_loc(t)
    assert frame.loc[t, FUTURE_VOL] == pytest.approx(per_candle.iloc[i + 1 : i + 1 + horizon].mean())
    assert frame.loc[t, vt.NAIVE_VOL] == pytest.approx(per_candle.iloc[i - horizon + 1 : i + 1].mean())
    assert frame.loc[t, "log_vol_3"] == pytest.approx(math.log(frame.loc[t, vt.NAIVE_VOL]))
    assert frame[[*dataset.features, FUTURE_VOL]].notna().all().all()
    # The hole: rows whose target reaches it, and every window that holds it, are dropped and counted.
    assert dataset.dropped["target_touches_missing"] == horizon  # t = 397..399 reach candle 400
    assert dataset.dropped["inputs_warm_up_or_missing"] >= 168
    assert len(dataset.frame) + sum(dataset.dropped.values()) == 599 - horizon


@pytest.mark.parametrize(
    ("bad", "word"),
    [(np.nan, "NaN"), (-0.001, "negative"), (0.0, "zero"), (np.inf, "infinite")],
)
def test_a_forecast_that_is_not_a_positive_number_is_refused_with_the_reason(bad: float, word: str) -> None:
    actual = np.full(200, 0.002)
    forecast = actual.copy()
    forecast[17] = bad
    decision = vt.volatility_gate(
        challenger=forecast, naive=actual * 1.5, champion=None, actual=actual, horizon_steps=1, alpha=0.05
    )
    assert not decision.promote
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith("refused")
    assert f"1 {word}" in decision.reasons[0]


def test_the_gate_promotes_only_a_significantly_better_forecast_than_naive_and_champion() -> None:
    rng = np.random.default_rng(4)
    truth = np.exp(rng.normal(math.log(0.002), 0.5, 500))
    actual = truth * np.exp(rng.normal(0, 0.3, 500))
    naive = truth * np.exp(rng.normal(0, 0.6, 500))
    good = truth * np.exp(rng.normal(0, 0.1, 500))
    decision = vt.volatility_gate(
        challenger=good, naive=naive, champion=None, actual=actual, horizon_steps=5, alpha=0.05
    )
    assert decision.promote, decision.reasons
    assert decision.dm_pvalue_vs_persistence < 0.05 and decision.dm_pvalue_vs_champion is None
    # A better champion holds its title.
    kept = vt.volatility_gate(
        challenger=good, naive=naive, champion=truth, actual=actual, horizon_steps=5, alpha=0.05
    )
    assert not kept.promote and kept.dm_pvalue_vs_champion is not None
    assert any("champion" in reason for reason in kept.reasons)
    # The naive forecast itself is never promoted over the naive forecast.
    same = vt.volatility_gate(
        challenger=naive, naive=naive, champion=None, actual=actual, horizon_steps=1, alpha=0.05
    )
    assert not same.promote and same.dm_pvalue_vs_persistence == 1.0
    metrics = vt.volatility_metrics(good, naive, actual, decision.dm_pvalue_vs_persistence)
    assert metrics["vol_skill_vs_naive"] == pytest.approx(
        1 - vt.log_mae(good, actual) / vt.log_mae(naive, actual)
    )


XGB = {"n_estimators": 100, "max_depth": 2, "learning_rate": 0.05, "min_child_weight": 50.0}


def test_har_and_xgboost_forecast_clustered_volatility_better_than_the_trailing_mean() -> None:
    horizon = 6
    dataset = vt.build_volatility_dataset(candles(clustered_walk(3000, seed=5), 60), 60, horizon)
    frame, features = dataset.frame, dataset.features
    folds = walk_forward_folds(
        frame[vt.FEATURE_TIME],
        3,
        timedelta(minutes=horizon),
        embargo=timedelta(minutes=horizon),
        min_train_rows=200,
    )
    naive = vt.cv_log_mae("naive", {}, frame, features, folds, horizon)
    har = vt.cv_log_mae("har", {}, frame, features, folds, horizon)
    xgb = vt.cv_log_mae("xgboost", XGB, frame, features, folds, horizon)
    assert har < naive and xgb < naive
    model = vt.fit_family("har", {}, frame, features)
    assert model.smearing == 1.0  # the loss is on the log scale: no smearing bias
    forecast = vt.predict_family("har", model, frame, features, horizon)
    assert vt.invalid_forecast_reason(forecast) is None
