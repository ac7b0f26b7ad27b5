from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cryptopredict.ml.evaluation import (
    diebold_mariano,
    evaluate_forecast,
    price_errors,
    promotion_gate,
)
from cryptopredict.ml.intervals import conformal_offsets, interval_coverage

pytestmark = pytest.mark.unit

CLOSE = np.array([100.0, 100.0, 200.0, 50.0])
TARGET = np.array([110.0, 95.0, 190.0, 55.0])
PREDICTED_PRICE = np.array([105.0, 97.0, 195.0, 48.0])


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_hand_checked_on_four_rows():
    metrics = evaluate_forecast(CLOSE, TARGET, np.log(PREDICTED_PRICE / CLOSE))
    # Errors -5, 2, 5, -7; persistence errors -10, 5, 10, -5.
    assert metrics.n == 4
    assert metrics.mae == pytest.approx(4.75)
    assert metrics.rmse == pytest.approx(math.sqrt((25 + 4 + 25 + 49) / 4))
    assert metrics.persistence_mae == pytest.approx(7.5)
    assert metrics.persistence_rmse == pytest.approx(math.sqrt((100 + 25 + 100 + 25) / 4))
    assert metrics.skill_vs_persistence == pytest.approx(1 - 4.75 / 7.5)
    assert metrics.direction_accuracy == pytest.approx(0.75)  # the last row predicts down, it went up
    assert metrics.direction_base_rate == pytest.approx(0.5)  # two ups, two downs
    assert metrics.interval_coverage is None and metrics.mean_interval_width_price is None


def test_interval_metrics_are_on_price():
    lower, upper = np.full(4, np.log(0.96)), np.full(4, np.log(1.15))
    metrics = evaluate_forecast(CLOSE, TARGET, np.zeros(4), lower, upper)
    # Price bounds [96, 115], [96, 115], [192, 230], [48, 57.5]: 110 and 55 inside, 95 and 190 not.
    assert metrics.interval_coverage == pytest.approx(0.5)
    assert metrics.mean_interval_width_price == pytest.approx((19 + 19 + 38 + 9.5) / 4)
    with pytest.raises(ValueError, match="both interval bounds"):
        evaluate_forecast(CLOSE, TARGET, np.zeros(4), lower_log_return=lower)


def test_as_dict_is_all_floats_and_omits_missing_intervals():
    without = evaluate_forecast(CLOSE, TARGET, np.zeros(4)).as_dict()
    assert "interval_coverage" not in without and "mean_interval_width_price" not in without
    assert without["n"] == 4.0 and all(isinstance(v, float) for v in without.values())
    with_interval = evaluate_forecast(CLOSE, TARGET, np.zeros(4), np.full(4, -0.1), np.full(4, 0.1))
    assert with_interval.as_dict()["interval_coverage"] == pytest.approx(1.0)


def test_persistence_has_zero_skill_and_counts_as_never_right_on_direction():
    metrics = evaluate_forecast(CLOSE, TARGET, np.zeros(4))
    assert metrics.skill_vs_persistence == 0.0 and metrics.mae == metrics.persistence_mae
    assert metrics.direction_accuracy == 0.0


def test_direction_ignores_unmoved_rows_and_base_rate_is_the_majority_share():
    close = np.full(5, 100.0)
    target = np.array([101.0, 102.0, 103.0, 99.0, 100.0])  # up, up, up, down, unmoved
    predicted = np.array([0.01, 0.0, -0.01, -0.01, 0.05])  # right, zero (wrong), wrong, right, ignored
    metrics = evaluate_forecast(close, target, predicted)
    assert metrics.direction_accuracy == pytest.approx(0.5)
    assert metrics.direction_base_rate == pytest.approx(0.75)
    flat = evaluate_forecast(close, close, predicted)
    assert math.isnan(flat.direction_accuracy) and math.isnan(flat.direction_base_rate)
    assert flat.skill_vs_persistence == 0.0  # persistence MAE is 0


def test_price_errors_and_input_checks():
    assert price_errors(CLOSE, TARGET, np.log(PREDICTED_PRICE / CLOSE)) == pytest.approx([-5, 2, 5, -7])
    with pytest.raises(ValueError, match="lengths differ"):
        price_errors(CLOSE, TARGET[:3], np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_forecast(CLOSE, TARGET, np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="positive"):
        evaluate_forecast(-CLOSE, TARGET, np.zeros(4))


# --- Diebold-Mariano -------------------------------------------------------------------------------


def test_dm_identical_errors_give_no_evidence():
    errors = np.random.default_rng(0).normal(size=50)
    assert tuple(diebold_mariano(errors, errors, horizon_steps=3)) == (0.0, 1.0)
    assert tuple(diebold_mariano(errors, -errors, horizon_steps=1)) == (0.0, 1.0)  # same absolute loss


def test_dm_clearly_better_challenger_and_the_sign_convention():
    rng = np.random.default_rng(1)
    truth_noise = rng.normal(size=500)
    better, worse = 0.5 * truth_noise, truth_noise + rng.normal(size=500)
    result = diebold_mariano(better, worse, horizon_steps=1)
    assert result.statistic < 0 and result.pvalue < 0.01
    reversed_result = diebold_mariano(worse, better, horizon_steps=1)
    assert reversed_result.statistic == pytest.approx(-result.statistic)
    assert reversed_result.pvalue > 0.99


def test_dm_matches_a_hand_computation_for_horizon_one():
    challenger = np.array([1.0, 2.0, 1.0, 1.0, 0.0])
    reference = np.array([2.0, 2.0, 3.0, 2.0, 2.0])
    # d = -1, 0, -2, -1, -2: mean -1.2, variance (1/n) 2.8 / 5 = 0.56, HLN factor sqrt((n - 1) / n).
    statistic = -1.2 / math.sqrt(0.56 / 5) * math.sqrt(4 / 5)
    result = diebold_mariano(challenger, reference, horizon_steps=1)
    assert result.statistic == pytest.approx(statistic)
    assert result.statistic == pytest.approx(-3.2071, abs=1e-4)
    assert result.pvalue == pytest.approx(stats.t.cdf(statistic, df=4))


def test_dm_horizon_two_uses_the_lag_one_autocovariance():
    challenger = np.array([1.0, 2.0, 1.0, 1.0, 0.0])
    reference = np.array([2.0, 2.0, 3.0, 2.0, 2.0])
    # Centred d: 0.2, 1.2, -0.8, 0.2, -0.8; lag-1 autocovariance (0.24 - 0.96 - 0.16 - 0.16) / 5.
    long_run = 0.56 + 2 * (-1.04 / 5)
    hln = (5 + 1 - 2 * 2 + 2 * 1 / 5) / 5
    statistic = math.sqrt(hln) * -1.2 / math.sqrt(long_run / 5)
    result = diebold_mariano(challenger, reference, horizon_steps=2)
    assert result.statistic == pytest.approx(statistic)
    assert result.pvalue == pytest.approx(stats.t.cdf(statistic, df=4))


def test_dm_falls_back_to_bartlett_weights_when_rectangular_is_not_positive():
    challenger = np.array([0.0, 4.0, 0.0, 4.0, 0.0, 4.0])
    reference = np.ones(6)
    # d alternates -1, 3: gamma0 = 4, gamma1 = -20/6, so 4 + 2 * gamma1 < 0; Bartlett halves gamma1.
    long_run = 4 + 2 * 0.5 * (-20 / 6)
    hln = (6 + 1 - 4 + 2 / 6) / 6
    result = diebold_mariano(challenger, reference, horizon_steps=2)
    assert result.statistic == pytest.approx(math.sqrt(hln) * 1.0 / math.sqrt(long_run / 6))
    assert result.statistic > 0  # the challenger is worse


def test_dm_constant_differential_and_bad_inputs():
    better = diebold_mariano(np.zeros(10), np.ones(10), horizon_steps=1)
    assert better.statistic == -math.inf and better.pvalue == 0.0
    with pytest.raises(ValueError, match="too few"):
        diebold_mariano(np.ones(3), np.zeros(3), horizon_steps=3)
    with pytest.raises(ValueError, match="shape"):
        diebold_mariano(np.ones(3), np.zeros(4), horizon_steps=1)


# --- promotion gate on simulated random walks -------------------------------------------------------


def random_walk_case(seed: int, horizon: int, n_steps: int = 2000, sigma: float = 0.002):
    """Close, target close, h-step log return and the latest one-step return, for every row."""
    rng = np.random.default_rng(seed)
    log_prices = np.log(100.0) + np.concatenate([[0.0], np.cumsum(rng.normal(0.0, sigma, n_steps))])
    rows = np.arange(1, n_steps + 1 - horizon)
    close, target = np.exp(log_prices[rows]), np.exp(log_prices[rows + horizon])
    last_return = log_prices[rows] - log_prices[rows - 1]
    return rng, close, target, np.log(target / close), last_return


def gate_on_second_half(close, target, predicted, horizon, max_plausible_skill=0.5, alpha=0.05):
    half = len(close) // 2
    close, target, predicted = close[half:], target[half:], predicted[half:]
    return promotion_gate(
        challenger_errors=price_errors(close, target, predicted),
        persistence_errors=price_errors(close, target, np.zeros(len(close))),
        champion_errors=None,
        horizon_steps=horizon,
        alpha=alpha,
        max_plausible_skill=max_plausible_skill,
    )


def fitted_ar1(target_return, last_return):
    """Least squares on the first half, applied everywhere: looks fitted, knows nothing."""
    half = len(target_return) // 2
    design = np.column_stack([np.ones(len(last_return)), last_return])
    coefficients, *_ = np.linalg.lstsq(design[:half], target_return[:half], rcond=None)
    return design @ coefficients


@pytest.mark.parametrize("horizon", [1, 5])
@pytest.mark.parametrize("noise", [0.0002, 0.002])
def test_noise_models_are_never_promoted_on_random_walks(horizon, noise):
    for seed in range(20):
        rng, close, target, _, _ = random_walk_case(seed, horizon)
        decision = gate_on_second_half(close, target, rng.normal(0.0, noise, len(close)), horizon)
        assert not decision.promote, (seed, decision.reasons)


def test_fitted_ar1_is_never_promoted_on_twenty_random_walks():
    for seed in range(20):
        _, close, target, target_return, last_return = random_walk_case(seed, horizon=1)
        decision = gate_on_second_half(close, target, fitted_ar1(target_return, last_return), 1)
        assert not decision.promote, (seed, decision.reasons)


@pytest.mark.parametrize("horizon", [1, 5])
def test_fitted_ar1_false_promotion_rate_stays_below_alpha(horizon):
    # A fitted model with a tiny, useless coefficient is almost exactly as good as persistence, so the
    # one-sided test promotes it by chance a little less often than alpha: rare, but not never.
    promoted = 0
    for seed in range(200):
        _, close, target, target_return, last_return = random_walk_case(seed, horizon)
        promoted += gate_on_second_half(
            close, target, fitted_ar1(target_return, last_return), horizon
        ).promote
    assert promoted / 200 < 0.05


def test_a_model_that_knows_part_of_the_future_is_promoted_when_plausible():
    rng, close, target, target_return, _ = random_walk_case(seed=3, horizon=5)
    predicted = 0.3 * target_return + rng.normal(0.0, 0.001, len(close))
    decision = gate_on_second_half(close, target, predicted, horizon=5, max_plausible_skill=0.9)
    assert decision.promote, decision.reasons
    assert decision.dm_pvalue_vs_persistence < 1e-6 and decision.dm_pvalue_vs_champion is None
    assert any("below persistence" in reason for reason in decision.reasons)


def test_implausible_skill_is_refused_as_leakage():
    rng, close, target, target_return, _ = random_walk_case(seed=4, horizon=5)
    predicted = target_return + rng.normal(0.0, 0.0005, len(close))
    decision = gate_on_second_half(close, target, predicted, horizon=5, max_plausible_skill=0.2)
    assert not decision.promote
    assert decision.dm_pvalue_vs_persistence < 1e-6
    (reason,) = decision.reasons
    assert "leakage" in reason and "exceeds the plausible maximum 20.00%" in reason


def test_refusal_reasons_are_sentences_with_numbers():
    persistence = np.array([1.0, -2.0, 1.5, -1.0, 2.0, -1.0])
    challenger = persistence * 1.01
    decision = promotion_gate(
        challenger_errors=challenger,
        persistence_errors=persistence,
        champion_errors=None,
        horizon_steps=1,
        alpha=0.05,
        max_plausible_skill=0.2,
    )
    assert not decision.promote
    assert decision.reasons == [
        "MAE 1.43083 is not below persistence's 1.41667 (skill -1.00%)",
        "DM p-value vs persistence 1 >= 0.05: the difference could be chance",
    ]


def test_champion_must_be_beaten_too():
    rng, close, target, target_return, _ = random_walk_case(seed=5, horizon=1)
    half = len(close) // 2
    close, target, target_return = close[half:], target[half:], target_return[half:]
    noise = rng.normal(0.0, 0.001, len(close))
    champion = price_errors(close, target, 0.5 * target_return + noise)
    challenger = price_errors(close, target, 0.3 * target_return + noise)
    persistence = price_errors(close, target, np.zeros(len(close)))
    arguments = dict(persistence_errors=persistence, horizon_steps=1, alpha=0.05, max_plausible_skill=0.9)
    refused = promotion_gate(challenger_errors=challenger, champion_errors=champion, **arguments)
    assert not refused.promote
    assert refused.dm_pvalue_vs_persistence < 0.05 and refused.dm_pvalue_vs_champion is not None
    assert any("not below the champion's" in reason for reason in refused.reasons)
    assert any("DM p-value vs the champion" in reason for reason in refused.reasons)
    promoted = promotion_gate(challenger_errors=champion, champion_errors=challenger, **arguments)
    assert promoted.promote, promoted.reasons
    assert len(promoted.reasons) == 5  # every check, passed, says why


def test_gate_rejects_a_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        promotion_gate(
            challenger_errors=np.ones(5),
            persistence_errors=np.ones(5),
            champion_errors=None,
            horizon_steps=1,
            alpha=1.5,
            max_plausible_skill=0.2,
        )


# --- conformal intervals ---------------------------------------------------------------------------


def test_offsets_approach_normal_quantiles_on_a_large_sample():
    residuals = np.random.default_rng(0).normal(0.0, 1.0, 200_000)
    lower, upper = conformal_offsets(residuals, coverage=0.8)
    assert lower == pytest.approx(stats.norm.ppf(0.1), abs=0.01)
    assert upper == pytest.approx(stats.norm.ppf(0.9), abs=0.01)


def test_coverage_on_a_fresh_sample_is_close_to_nominal():
    rng = np.random.default_rng(1)
    lower, upper = conformal_offsets(rng.normal(0.0, 0.01, 5_000), coverage=0.8)
    predicted = rng.normal(0.0, 0.02, 50_000)
    actual = predicted + rng.normal(0.0, 0.01, 50_000)
    assert interval_coverage(actual, predicted + lower, predicted + upper) == pytest.approx(0.8, abs=0.03)


def test_small_calibration_sets_still_cover_on_average():
    # The conformal guarantee: averaged over calibration sets, coverage is at least nominal; with
    # n = 19 and 80% the order statistics are the 2nd and 18th, which is exactly 80% in expectation.
    rng = np.random.default_rng(2)
    coverages = []
    for _ in range(4_000):
        lower, upper = conformal_offsets(rng.standard_t(3, 19), coverage=0.8)
        fresh = rng.standard_t(3, 50)
        coverages.append(interval_coverage(fresh, np.full(50, lower), np.full(50, upper)))
    assert np.mean(coverages) == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 19, 50, 199])
def test_small_sample_correction_widens_never_narrows(n):
    residuals = np.random.default_rng(n).normal(size=n)
    lower, upper = conformal_offsets(residuals, coverage=0.8)
    assert lower <= np.quantile(residuals, 0.1) and upper >= np.quantile(residuals, 0.9)
    if n <= 9:  # too few residuals: the whole observed range
        assert (lower, upper) == (residuals.min(), residuals.max())


def test_offsets_follow_each_tail_of_skewed_residuals():
    lower, upper = conformal_offsets(np.arange(1.0, 100.0), coverage=0.8)  # n = 99: k = 90
    assert (lower, upper) == (10.0, 90.0)
    skewed = np.random.default_rng(3).exponential(size=10_000) - 1.0
    lower, upper = conformal_offsets(skewed, coverage=0.9)
    assert lower == pytest.approx(np.log(1 / 0.95) - 1, abs=0.01)
    assert upper == pytest.approx(np.log(1 / 0.05) - 1, abs=0.1)


def test_interval_helpers_reject_bad_input_and_include_bounds():
    assert interval_coverage([1.0, 2.0, 3.0], [1.0, 2.5, 0.0], [1.0, 3.0, 2.9]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no residuals"):
        conformal_offsets(np.array([]), coverage=0.8)
    with pytest.raises(ValueError, match="coverage"):
        conformal_offsets(np.ones(5), coverage=1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        interval_coverage([1.0, 2.0], [0.0], [3.0])


def test_a_mean_return_learnt_from_a_random_walk_with_a_lucky_drift_is_not_worth_a_model():
    """On 100,000 test rows of a random walk whose test window happens to drift up, a model that learnt
    only a small positive mean return beats persistence 'significantly' by a negligible margin: the
    minimum skill refuses it, where the DM test alone would promote it."""
    rng = np.random.default_rng(4)
    returns = rng.normal(0.0, 0.002, 100_000)
    drift = 6.0 * 0.002 / np.sqrt(returns.size)  # a 6-sigma drift over the window
    returns += drift - returns.mean()
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[:-1])]))
    target = close * np.exp(returns)
    predicted = np.full(returns.size, drift)  # as if learnt from an earlier window
    arguments = dict(
        challenger_errors=price_errors(close, target, predicted),
        persistence_errors=price_errors(close, target, np.zeros(returns.size)),
        champion_errors=None,
        horizon_steps=1,
        alpha=0.05,
        max_plausible_skill=0.5,
    )
    lucky = promotion_gate(**arguments)
    assert lucky.promote and lucky.dm_pvalue_vs_persistence < 0.01
    refused = promotion_gate(**arguments, min_skill=0.001)
    assert not refused.promote
    assert (
        "by too little to matter" in refused.reasons[0] and "model.min_skill is 0.10%" in refused.reasons[0]
    )
