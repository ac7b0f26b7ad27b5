"""The hand-written HAR and conformal code checked against well-kept libraries where the two overlap:
`arch` (HARX) for the HAR regressors and least squares, `mapie` for split-conformal quantiles and
adaptive conformal inference. Production does not use either (the comments in cryptopredict/ml/
volatility.py and intervals.py say why); these tests keep the small code there honest."""

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from arch.univariate import HARX
from mapie.conformity_scores import AbsoluteConformityScore
from mapie.regression import SplitConformalRegressor, TimeSeriesRegressor
from sklearn.dummy import DummyRegressor

from cryptopredict.ml.intervals import aci_update, conformal_offsets, conformal_quantile, mondrian_quantiles
from cryptopredict.ml.volatility import FLOOR, HarModel, absolute_returns, future_volatility, har_features

pytestmark = pytest.mark.unit

# Corsi's daily windows: arch's HARX documents them, and they differ from ours (1, 6, 24, 168).
WINDOWS = (1, 5, 22)


def closes(n: int, seed: int) -> pd.Series:
    """Prices whose volatility wanders slowly; every move is at least 1e-5, so no absolute return
    reaches the FLOOR that har_features clips at (arch does not clip)."""
    rng = np.random.default_rng(seed)
    log_vol = np.zeros(n)
    for t in range(1, n):
        log_vol[t] = 0.98 * log_vol[t - 1] + 0.15 * rng.normal()
    returns = 0.01 * np.exp(log_vol) * rng.standard_t(5, n)
    returns = np.sign(returns) * np.maximum(np.abs(returns), 1e-5)
    return pd.Series(100.0 * np.exp(np.cumsum(returns)))


def zero_predictor(n: int) -> DummyRegressor:
    """A fitted sklearn regressor that predicts 0: mapie's conformity scores y - 0 are then the residuals."""
    return DummyRegressor(strategy="constant", constant=0.0).fit(np.zeros((n, 1)), np.zeros(n))


def mapie_offsets(residuals: np.ndarray, coverage: float, symmetric: bool) -> tuple[float, float]:
    """mapie's split-conformal interval around a prediction of 0: signed residual scores (each tail
    gets (1 - coverage) / 2) or absolute ones (one quantile of |residual|, mirrored)."""
    n = residuals.size
    regressor = SplitConformalRegressor(
        zero_predictor(n),
        confidence_level=coverage,
        conformity_score=AbsoluteConformityScore(sym=symmetric),
        prefit=True,
    ).conformalize(np.zeros((n, 1)), residuals)
    _, intervals = regressor.predict_interval(np.zeros((1, 1)))
    return float(intervals[0, 0, 0]), float(intervals[0, 1, 0])


def is_tie(n: int, level: Fraction) -> bool:
    """(n + 1) * level is a whole number: there the rank ceil((n + 1) * level) hangs on float rounding
    (mapie computes 1 - alpha + alpha / 2 and lands one rank further out), so exact ranks are checked
    with fractions instead."""
    return ((n + 1) * level).denominator == 1


def test_har_regressors_and_target_line_up_with_arch_harx_in_levels():
    """arch's HAR averages the series itself: on y = |r| its regressors are our trailing means (the
    exp of har_features) and its dependent variable is our one-candle future volatility. Both least
    squares fits then see the same rows, so the coefficients agree; a window or a target shifted by
    one candle would not."""
    abs_ret = absolute_returns(closes(3000, seed=3))
    assert abs_ret.min() > FLOOR
    levels = np.exp(har_features(abs_ret, WINDOWS))
    target = future_volatility(abs_ret, 1)
    rows = levels.notna().all(axis=1) & target.notna()
    x = np.column_stack([np.ones(int(rows.sum())), levels[rows].to_numpy()])
    ours, *_ = np.linalg.lstsq(x, target[rows].to_numpy(), rcond=None)

    harx = HARX(abs_ret.dropna().rename("abs_ret"), lags=list(WINDOWS), rescale=False)
    result = harx.fit(disp=False)
    hold_back = max(WINDOWS)
    # arch's row i (of the series without its first NaN) is our row i: the windows end at the same candle.
    assert np.allclose(harx.regressors[hold_back:, 1:], levels.iloc[hold_back:-1].to_numpy(), rtol=1e-12)
    assert result.nobs == int(rows.sum())
    names = ["Const", *(f"abs_ret[0:{w}]" for w in WINDOWS)]
    assert np.allclose(ours, result.params[names].to_numpy(), rtol=1e-8, atol=1e-12)


def test_har_model_fit_matches_arch_least_squares_on_a_direct_multi_step_target():
    """Our HAR is in logs and its target is the mean over the next H candles, which arch's HARX cannot
    build (it averages the series in levels and forecasts by recursion); given our log regressors as
    exogenous x and the log target, its OLS must give HarModel's intercept, coefficients and smearing
    (the mean of exp(residual)) on the complete rows HarModel keeps."""
    abs_ret = absolute_returns(closes(3000, seed=4))
    features, target = har_features(abs_ret, WINDOWS), future_volatility(abs_ret, 6)
    model = HarModel.fit(features, target)

    rows = features.notna().all(axis=1) & target.notna()
    log_target = np.log(target[rows].clip(lower=FLOOR)).rename("log_vol")
    result = HARX(log_target, x=features[rows], lags=None, rescale=False).fit(disp=False)
    assert result.params["Const"] == pytest.approx(model.intercept, rel=1e-9)
    assert np.allclose(model.coefficients, result.params[features.columns].to_numpy(), rtol=1e-9)
    assert model.smearing == pytest.approx(float(np.mean(np.exp(result.resid))), rel=1e-9)
    fitted = log_target - result.resid
    assert np.allclose(model.predict(features[rows]), np.exp(fitted) * model.smearing, rtol=1e-9)


@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.9, 0.95])
def test_conformal_offsets_and_quantile_match_mapie_split_conformal(coverage: float):
    """mapie's rank is ceil((n + 1)(1 - alpha))-th smallest score, ours ceil((n + 1) * level): with
    signed scores y - pred (each tail alone) it is conformal_offsets, with absolute scores it is
    conformal_quantile of |residual| at the coverage."""
    rng = np.random.default_rng(5)
    exact = Fraction(str(coverage))
    compared = 0
    for n in range(20, 400, 7):
        residuals = rng.standard_t(4, n) + 0.3  # skewed about 0, so the two tails differ
        offsets = conformal_offsets(residuals, coverage)
        ordered = np.sort(residuals)
        # The tail's rank, in exact arithmetic: ours must pick it whether or not floats are at a tie.
        k = min(n, math.ceil((n + 1) * (1 + exact) / 2))
        assert offsets == (ordered[n - k], ordered[k - 1])
        if n < 2 / (1 - coverage) or k == n:
            continue  # mapie refuses (or gives an infinite bound) where ours falls back to the range
        if not is_tie(n, (1 + exact) / 2):
            assert offsets == mapie_offsets(residuals, coverage, symmetric=False)
            compared += 1
        if not is_tie(n, exact):
            half_width = conformal_quantile(np.abs(residuals), coverage)
            assert (-half_width, half_width) == mapie_offsets(residuals, coverage, symmetric=True)
    assert compared >= 40


def test_mondrian_quantiles_are_mapie_split_conformal_fitted_per_regime():
    """mapie has no Mondrian (per-group) split conformal short of its conditional regressor (cvxpy and
    torch); fitted on each regime's scaled residuals alone it gives mondrian_quantiles' tails."""
    rng = np.random.default_rng(6)
    regimes = rng.integers(0, 3, 903)
    scaled = rng.standard_t(4, 903) * (1.0 + 0.5 * regimes) - 0.2
    coverage = 0.8
    offsets = mondrian_quantiles(scaled, regimes, [(1 - coverage) / 2, (1 + coverage) / 2])
    assert sorted(offsets) == [0, 1, 2]
    for g, pair in offsets.items():
        values = scaled[regimes == g]
        assert not is_tie(values.size, (1 + Fraction(str(coverage))) / 2)
        assert tuple(pair) == mapie_offsets(values, coverage, symmetric=False)


def test_aci_update_follows_mapie_adaptive_conformal_inference_step_by_step():
    """The streaming loop of Gibbs & Candes: read the interval at the current alpha, see the outcome,
    move alpha. Ours (conformal_quantile at 1 - alpha, then aci_update on the miss) must give mapie's
    TimeSeriesRegressor(method="aci") alpha after every outcome, on a stream whose volatility first
    rises (misses cluster, alpha falls) then drops (alpha climbs back)."""
    rng = np.random.default_rng(7)
    n, target_alpha, gamma = 500, 0.1, 0.005
    calibration = rng.standard_t(4, n)
    stream = rng.standard_t(4, 400) * np.where(np.arange(400) < 200, 1.4, 0.6)
    reference = TimeSeriesRegressor(
        zero_predictor(n), method="aci", cv="prefit", conformity_score=AbsoluteConformityScore()
    ).fit(np.zeros((n, 1)), calibration)

    alpha, ours, theirs = target_alpha, [], []
    for outcome in stream:
        half_width = conformal_quantile(np.abs(calibration), 1.0 - alpha)
        alpha = aci_update(alpha, [abs(outcome) > half_width], target_alpha, gamma)
        ours.append(alpha)
        reference.adapt_conformal_inference(
            np.zeros((1, 1)), np.array([outcome]), gamma=gamma, confidence_level=1.0 - target_alpha
        )
        theirs.append(reference.current_alpha[target_alpha])

    # mapie clips alpha to [0, 1] and ours to [0.005, 0.995]: the stream must stay inside both for the
    # two to agree, and must move alpha both ways for the comparison to mean something.
    assert 0.005 < min(ours) < 0.06 and 0.12 < max(ours) < 0.995
    assert np.allclose(ours, theirs, rtol=0, atol=1e-12)
