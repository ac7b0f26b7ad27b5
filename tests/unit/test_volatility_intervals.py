"""Volatility targets, HAR, and intervals that adapt to volatility, with the backtests that judge them."""

import numpy as np
import pandas as pd
import pytest

from cryptopredict.ml.intervals import (
    christoffersen_pvalue,
    conformal_offsets,
    kupiec_pvalue,
    mondrian_quantiles,
    pinball_loss,
    regime_cut_points,
    regime_of,
    winkler_score,
)
from cryptopredict.ml.volatility import (
    HarModel,
    absolute_returns,
    future_volatility,
    har_features,
    trailing_volatility,
)

pytestmark = pytest.mark.unit


def test_targets_look_ahead_and_features_look_back():
    close = pd.Series(np.exp(np.cumsum([0.0, 0.01, -0.02, 0.03, -0.04])))
    abs_ret = absolute_returns(close)
    assert np.allclose(abs_ret[1:], [0.01, 0.02, 0.03, 0.04])
    # At t=1: the next two candles' mean absolute return; the last two rows cannot know theirs.
    assert future_volatility(abs_ret, 2)[1] == pytest.approx(0.025)
    assert future_volatility(abs_ret, 2)[3:].isna().all()
    assert trailing_volatility(abs_ret, 2)[2] == pytest.approx(0.015)
    with pytest.raises(ValueError):
        future_volatility(abs_ret, 0)


def garch_like(n: int, seed: int) -> pd.Series:
    """Returns whose volatility wanders slowly: calm and wild stretches, as in real markets."""
    rng = np.random.default_rng(seed)
    log_vol = np.zeros(n)
    for t in range(1, n):
        log_vol[t] = 0.98 * log_vol[t - 1] + 0.15 * rng.normal()
    return pd.Series(0.01 * np.exp(log_vol) * rng.standard_t(5, n))


def test_har_beats_the_trailing_mean_on_persistent_volatility():
    returns = garch_like(6000, seed=1)
    abs_ret = returns.abs()
    features, target = har_features(abs_ret), future_volatility(abs_ret, 24)
    model = HarModel.fit(features[:4000], target[:4000])
    test = slice(4200, 5900)
    forecast, naive = model.predict(features[test]), trailing_volatility(abs_ret, 24)[test]
    actual = target[test]
    assert (forecast > 0).all() and np.isfinite(forecast).all()
    log_mae = np.mean(np.abs(np.log(forecast) - np.log(actual)))
    naive_log_mae = np.mean(np.abs(np.log(naive) - np.log(actual)))
    assert log_mae < naive_log_mae
    with pytest.raises(ValueError, match="too few"):
        HarModel.fit(features[:3], target[:3])


def test_mondrian_intervals_hold_in_each_regime_where_constant_width_does_not():
    returns = garch_like(20000, seed=2)
    abs_ret = returns.abs()
    # The trailing day's volatility, known before the return: both the scale and the regime.
    scale = trailing_volatility(abs_ret, 24).shift(1)
    frame = pd.DataFrame({"r": returns, "scale": scale, "trailing": scale}).dropna()
    calibration, test = frame.iloc[:10000], frame.iloc[10000:]
    cuts = regime_cut_points(calibration.trailing)
    offsets = mondrian_quantiles(
        calibration.r / calibration.scale, regime_of(calibration.trailing, cuts), [0.1, 0.9]
    )
    regimes = regime_of(test.trailing, cuts)
    low = np.array([offsets[g][0] for g in regimes]) * test.scale
    high = np.array([offsets[g][1] for g in regimes]) * test.scale
    constant = conformal_offsets(calibration.r, 0.8)
    inside = (test.r >= low) & (test.r <= high)
    inside_constant = (test.r >= constant[0]) & (test.r <= constant[1])
    for g in (0, 1, 2):
        assert abs(inside[regimes == g].mean() - 0.8) < 0.04
    assert inside_constant[regimes == 2].mean() < 0.72  # too narrow when it matters
    assert winkler_score(test.r, low, high, 0.8) < winkler_score(test.r, constant[0], constant[1], 0.8)
    # The backtests see the same: misses of the constant interval cluster in wild stretches.
    assert christoffersen_pvalue(inside_constant.to_numpy()) < 0.01
    assert christoffersen_pvalue(inside.to_numpy()) > christoffersen_pvalue(inside_constant.to_numpy())


def test_kupiec_accepts_the_nominal_rate_and_rejects_another():
    inside = np.array([True] * 800 + [False] * 200)
    assert kupiec_pvalue(inside, 0.8) == pytest.approx(1.0)
    assert kupiec_pvalue(np.array([True] * 700 + [False] * 300), 0.8) < 1e-10
    assert kupiec_pvalue(np.ones(100, dtype=bool), 0.8) < 1e-5  # never missing is also wrong


def test_christoffersen_sees_clustered_misses():
    rng = np.random.default_rng(3)
    independent = rng.random(2000) < 0.8
    clustered = np.repeat(rng.random(200) < 0.8, 10)
    assert christoffersen_pvalue(independent) > 0.01
    assert christoffersen_pvalue(clustered) < 1e-6
    assert christoffersen_pvalue(np.ones(10, dtype=bool)) == 1.0


def test_interval_and_quantile_scores_by_hand():
    # Width 2 each; the second outcome is 1 above: 2 / 0.2 * 1 = 10 more.
    assert winkler_score([0.0, 2.0], [-1.0, -1.0], [1.0, 1.0], 0.8) == pytest.approx((2 + 12) / 2)
    assert pinball_loss([1.0, -1.0], [0.0, 0.0], 0.9) == pytest.approx((0.9 + 0.1) / 2)
    assert list(regime_of([0.1, 0.5, 0.9], (0.3, 0.6))) == [0, 1, 2]
