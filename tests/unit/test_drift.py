"""PSI with known answers, its properties, and the drift report's verdicts and reasons; what a drift
check compares (cryptopredict.ml.drift_check) and what a breach does about a retrain
(cryptopredict.drift_monitor.retrain_verdict), without the registry, the store or Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from temporalio.client import WorkflowExecutionStatus

from cryptopredict.drift_monitor import LastRetrain, retrain_verdict
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml.dataset import FEATURE_TIME, build_dataset, indicator_values
from cryptopredict.ml.drift import (
    between,
    drift_report,
    effective_size,
    model_input_rows,
    noise_floor,
    psi,
    quantile_edges,
)
from cryptopredict.ml.drift_check import (
    Champion,
    champion_figures,
    check_settings,
    compare_windows,
    newest_candle,
    nothing_to_compare,
    windows,
)
from cryptopredict.ml.live import LiveFigures
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftRecord,
    DriftReport,
    DriftTarget,
    DriftThresholds,
    RetrainRequest,
)
from cryptopredict.settings import DriftSettings
from cryptopredict.simulators.markets import synthetic_candles

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = DriftTarget(
    pair="BTC/USD",
    interval_s=60,
    horizon_candles=1,
    model_name="cryptopredict-btcusd-60s-h1",
    model_version="3",
    model_kind="linear",
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_identical_samples_have_zero_psi():
    values = rng().normal(size=1000)
    assert psi(values, values) == 0.0
    assert psi(values, rng(1).permutation(values)) == 0.0


def test_a_hand_computed_answer():
    reference = np.arange(100.0)  # deciles: ten bins of ten values each, p = 0.1
    recent = np.array([5.0] * 50 + [15.0] * 50)  # half in the first bin, half in the second
    p = np.array([0.1] * 10)
    q = np.array([0.5, 0.5] + [1e-4] * 8)  # empty bins floored at eps
    assert psi(reference, recent) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)


def test_the_same_distribution_stays_below_the_conventional_no_change_line():
    values = [psi(rng(s).normal(size=2000), rng(s + 100).normal(size=2000)) for s in range(20)]
    assert max(values) < 0.1
    # Sampling alone: about (bins - 1) * (1/n + 1/m), as the module says.
    assert np.mean(values) == pytest.approx(9 * (2 / 2000), rel=0.3)


@pytest.mark.parametrize(("shift", "expected"), [(0.25, 0.0625), (0.5, 0.25), (1.0, 1.0)])
def test_a_mean_shift_of_d_standard_deviations_gives_about_d_squared(shift, expected):
    value = psi(rng(2).normal(size=200_000), rng(3).normal(shift, size=200_000))
    assert value == pytest.approx(expected, rel=0.15)


def test_conventional_thresholds_order_small_moderate_and_large_shifts():
    reference = rng(4).normal(size=20_000)
    small = psi(reference, rng(5).normal(0.1, size=20_000))
    moderate = psi(reference, rng(6).normal(0.4, size=20_000))
    large = psi(reference, rng(7).normal(0.0, 5.0, size=20_000))  # volatility x5
    assert small < 0.1 < moderate < 0.25 < large
    assert large > 1.0


def test_psi_grows_with_the_shift():
    reference = rng(8).normal(size=5000)
    noise = rng(9).normal(size=5000)
    values = [psi(reference, noise + d) for d in (0.0, 0.2, 0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values)


def test_psi_is_non_negative_and_unchanged_by_a_monotone_transform():
    for seed in range(10):
        reference, recent = rng(seed).lognormal(size=500), rng(seed + 50).lognormal(0.3, size=300)
        value = psi(reference, recent)
        assert value >= 0
        assert psi(np.log(reference), np.log(recent)) == pytest.approx(value, abs=1e-12)
        assert psi(reference * 1000 + 7, recent * 1000 + 7) == pytest.approx(value, abs=1e-12)


def test_values_beyond_the_reference_range_land_in_the_outer_bins():
    reference = rng(10).uniform(0, 1, 1000)
    # Everything above the maximum: all of it in the top bin.
    beyond = psi(reference, np.full(100, 5.0))
    top_only = psi(reference, np.full(100, 0.999))
    assert beyond == pytest.approx(top_only)
    assert beyond > 5


def test_nans_and_infinities_are_left_out():
    values = rng(11).normal(size=1000)
    with_nans = np.concatenate([values, [np.nan] * 300, [np.inf, -np.inf]])
    assert psi(with_nans, values) == 0.0
    assert psi(values, with_nans) == 0.0
    with pytest.raises(ValueError, match="finite values"):
        psi(values, [np.nan, np.nan])
    with pytest.raises(ValueError, match="2 bins"):
        psi(values, values, bins=1)


def test_tied_quantiles_merge_into_fewer_bins():
    # A news count: mostly exactly zero. The zeros stay in one bin instead of spreading across empty ones.
    counts = np.concatenate([np.zeros(800), rng(12).integers(1, 5, 200)])
    edges = quantile_edges(counts, 10)
    assert edges[0] == 0 and len(edges) == len(set(edges)) < 9
    assert psi(counts, rng(13).permutation(counts)) == 0.0
    constant = np.full(500, 0.5)
    assert psi(constant, constant) == 0.0
    assert psi(constant, np.full(50, 0.7)) > 5  # all of the recent sample moved out of the reference's bin


def ar1(n: int, rho: float, seed: int) -> np.ndarray:
    noise = rng(seed).normal(size=n)
    out = np.empty(n)
    out[0] = noise[0] / np.sqrt(1 - rho**2)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + noise[i]
    return out


def test_the_noise_floor_of_independent_rows_is_the_sampling_formula():
    a, b = rng(70).normal(size=1000), rng(71).normal(size=500)
    assert effective_size(a) == pytest.approx(1000, rel=0.1)
    assert noise_floor(a, b) == pytest.approx(9 * (1 / 1000 + 1 / 500), rel=0.15)


def test_autocorrelated_windows_of_one_process_exceed_the_threshold_but_not_threshold_plus_floor():
    """A slow moving average on a random walk: two windows of the same process, raw PSI often above the
    conventional 0.25, never above 0.25 plus the noise floor."""
    raw, excess = [], []
    for seed in range(20):
        series = ar1(2880, 0.97, seed)
        reference, recent = series[:1440], series[1440:]
        raw.append(psi(reference, recent))
        excess.append(raw[-1] - noise_floor(reference, recent))
        assert effective_size(reference) < 60
    assert max(raw) > 0.25  # what a bare threshold would call significant drift
    assert max(excess) < 0.25
    # ... while a real shift of the same process still stands out.
    series = ar1(2880, 0.97, 99)
    shifted = series[1440:] * 4
    assert psi(series[:1440], shifted) > 0.25 + noise_floor(series[:1440], shifted)


def frame(values: dict[str, np.ndarray], start: datetime = T0) -> pd.DataFrame:
    n = len(next(iter(values.values())))
    out = pd.DataFrame(values)
    out[FEATURE_TIME] = pd.date_range(start, periods=n, freq="1min")
    return out


def test_the_report_names_each_breached_feature_with_its_psi():
    n = 2000
    reference = frame({"calm": rng(20).normal(size=n), "wild": rng(21).normal(size=n)})
    recent = frame(
        {"calm": rng(22).normal(size=n), "wild": rng(23).normal(0, 5, size=n)}, T0 + timedelta(days=2)
    )
    report = drift_report(
        reference, recent, ["calm", "wild"], None, DriftThresholds(), target=TARGET, checked_at=T0
    )
    assert [f.feature for f in report.features] == ["wild", "calm"]  # largest PSI first
    wild, calm = report.features
    assert wild.breached and wild.psi is not None and wild.psi > 1 and not calm.breached
    assert report.breached and len(report.breaches) == 1
    assert report.breaches[0].startswith(f"wild: PSI {wild.psi:.3g} > 0.25 + noise floor ")
    assert "(training window 2000 rows, recent 2000)" in report.breaches[0]
    assert report.reference.rows == n and report.reference.start == T0
    assert report.recent.start == T0 + timedelta(days=2)
    assert report.live is None and any("no outcomes" in note for note in report.notes)
    assert report.retrain_reason().startswith("drift: wild: PSI")
    assert "BREACH" in report.table() and "wild" in report.summary()


def test_same_distribution_no_breach():
    reference = frame({"a": rng(30).normal(size=1500), "b": rng(31).uniform(size=1500)})
    recent = frame({"a": rng(32).normal(size=1500), "b": rng(33).uniform(size=1500)})
    report = drift_report(
        reference, recent, ["a", "b"], None, DriftThresholds(), target=TARGET, checked_at=T0
    )
    assert not report.breached and report.breaches == []
    assert all(f.psi is not None and f.psi < 0.1 for f in report.features)


def test_too_few_rows_and_unknown_features_are_not_compared_and_said_so():
    reference = frame({"a": rng(40).normal(size=50)})
    recent = frame({"a": rng(41).normal(5, size=50)})
    report = drift_report(
        reference, recent, ["a", "nope"], None, DriftThresholds(min_rows=100), target=TARGET, checked_at=T0
    )
    assert report.features[0].psi is None and not report.breached
    assert any("nope" in n for n in report.notes) and any("fewer than 100" in n for n in report.notes)


def figures(
    n: int = 400,
    live_mae: float = 1.0,
    persistence_mae: float = 1.0,
    name: str = TARGET.model_name,
    version: str = "3",
) -> LiveFigures:
    return LiveFigures(
        model_name=name,
        model_version=version,
        n=n,
        live_mae=live_mae,
        persistence_mae=persistence_mae,
        skill_vs_persistence=1 - live_mae / persistence_mae,
        interval_coverage=None,
    )


def test_live_skill_below_the_threshold_is_a_breach_only_with_enough_outcomes():
    same = frame({"a": rng(50).normal(size=500)})
    thresholds = DriftThresholds(skill=0.0, min_outcomes=100)
    worse = drift_report(
        same, same, ["a"], figures(400, 12.0, 10.0), thresholds, target=TARGET, checked_at=T0
    )
    assert worse.live is not None and worse.live.breached
    assert worse.breaches == [
        "live skill vs persistence of v3 is -0.2000 (below 0) over 400 outcomes: MAE 12 vs persistence 10"
    ]
    few = drift_report(same, same, ["a"], figures(40, 12.0, 10.0), thresholds, target=TARGET, checked_at=T0)
    assert few.live is not None and not few.live.evaluated and not few.breached
    better = drift_report(
        same, same, ["a"], figures(400, 9.0, 10.0), thresholds, target=TARGET, checked_at=T0
    )
    assert not better.breached
    persistence = TARGET.model_copy(update={"model_kind": "persistence"})
    flat = drift_report(
        same, same, ["a"], figures(400, 10.0, 10.0), thresholds, target=persistence, checked_at=T0
    )
    assert not flat.breached and any("persistence" in n for n in flat.notes)


def test_model_input_rows_are_the_dataset_rows_plus_the_newest_without_a_target():
    candles = pd.DataFrame(
        [c.model_dump() for c in synthetic_candles("BTC/USD", 60, 600, T0, seed=1, gap_every=97)]
    )
    config = IndicatorConfig()
    values, _ = indicator_values(candles, "BTC/USD", 60, None, config)
    rows, names = model_input_rows(candles, 60, 5, values, config)
    dataset = build_dataset(candles, 60, 5, 1, values, None, config)
    assert names == dataset.features
    merged = dataset.frame.merge(rows, on=FEATURE_TIME, suffixes=("", "_drift"))
    assert len(merged) == len(dataset.frame)  # every training row is an input row, with the same values
    for name in names:
        np.testing.assert_allclose(merged[name], merged[f"{name}_drift"])
    assert rows[FEATURE_TIME].max() == candles["window_start"].max()  # the newest candle counts too
    window = between(rows, T0 + timedelta(minutes=300), T0 + timedelta(minutes=400))
    assert len(window) and window[FEATURE_TIME].min() > pd.Timestamp(T0 + timedelta(minutes=300))


def test_the_stored_row_is_flat_and_round_trips_as_json():
    reference = frame({"a": rng(60).normal(size=300)})
    recent = frame({"a": rng(61).normal(3, size=300)})
    report = drift_report(reference, recent, ["a"], None, DriftThresholds(), target=TARGET, checked_at=T0)
    record = DriftRecord.of(report, "drift-BTCUSD-60s-h1", "run-1")
    assert record.breached and record.max_psi_feature == "a" and record.psi["a"] == report.features[0].psi
    assert DriftRecord.from_json(record.to_json_bytes()) == record
    assert DriftReport.model_validate_json(report.model_dump_json()) == report
    assert (record.exchange, record.pair) == ("kraken", TARGET.pair)
    # A target's market key is stored as its venue and bare pair, as every table of a market keeps them.
    elsewhere = report.model_copy(
        update={"target": TARGET.model_copy(update={"pair": "coinbase:demo.BTC/USD"})}
    )
    assert DriftRecord.of(elsewhere, "drift-x", "run-1").model_dump(include={"exchange", "pair"}) == {
        "exchange": "coinbase",
        "pair": "demo.BTC/USD",
    }
    # Records published before venues existed carry none: Kraken's.
    old = record.model_dump(mode="json", exclude={"exchange"})
    assert DriftRecord.model_validate(old).exchange == "kraken"


def test_drift_settings_defaults():
    settings = DriftSettings()
    assert settings.psi_threshold == 0.25 and settings.every_s == 3600 and settings.features == []


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def trained_on(first: int, last: int, **params: str) -> Champion:
    """Champion v3 whose retrain logged the rows of minutes first..last as its dataset."""
    window = {"dataset_start": minute(first).isoformat(), "dataset_end": minute(last).isoformat()}
    return Champion("3", "linear", window | params)


def input_rows(n: int = 600) -> pd.DataFrame:
    """n rows of two model inputs, one a minute from T0."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    rows[FEATURE_TIME] = pd.date_range(T0, periods=n, freq="1min")
    return rows


# --- the settings of a check ---------------------------------------------------------------------------


def test_the_inputs_values_override_the_workers_settings_and_none_leaves_them():
    configured = DriftSettings(psi_threshold=0.3, features=["a"], recent_window_s=7200, retrain_cooldown_s=60)
    default = check_settings(DriftMonitorInput(), configured)
    assert default.thresholds == DriftThresholds(
        psi=0.3,
        bins=configured.psi_bins,
        min_rows=configured.min_rows,
        skill=configured.skill_threshold,
        min_outcomes=configured.min_outcomes,
    )
    assert (default.features, default.recent_window, default.retrain_cooldown) == (
        ["a"],
        timedelta(hours=2),
        timedelta(minutes=1),
    )
    request = DriftMonitorInput(
        psi_threshold=0.5, skill_threshold=-0.1, features=[], recent_window_s=600, retrain_cooldown_s=0
    )
    mine = check_settings(request, configured)
    assert (mine.thresholds.psi, mine.thresholds.skill, mine.thresholds.bins) == (
        0.5,
        -0.1,
        configured.psi_bins,
    )
    # An explicit empty list (every model input) and a zero cooldown are values, not "unset".
    assert (mine.features, mine.recent_window, mine.retrain_cooldown) == (
        [],
        timedelta(minutes=10),
        timedelta(0),
    )


# --- the champion and the windows ----------------------------------------------------------------------


def test_the_champions_training_window_and_lags_come_from_its_runs_params():
    champion = trained_on(0, 299, lags="7")
    assert champion.training_window() == (minute(0), minute(299))
    assert champion.lags(5) == 7 and champion.describe() == "v3 (linear)"
    persistence = Champion("1", "persistence", {"lags": "5"})  # trained on nothing: no dataset range
    assert persistence.training_window() is None and persistence.lags(9) == 5
    assert (
        Champion().training_window() is None and Champion().lags(9) == 9 and Champion().describe() == "none"
    )


def test_the_recent_window_ends_at_the_newest_candle_not_the_wall_clock():
    candles = pd.DataFrame({"window_start": pd.date_range(T0, periods=10, freq="1min", tz=UTC)})
    assert newest_candle(candles) == minute(9)
    span = windows(minute(9), timedelta(minutes=4), Champion())
    assert (span.recent_after, span.newest) == (minute(5), minute(9))


def test_the_reference_is_the_training_window_with_its_first_row_included():
    rows = input_rows()
    report = compare_windows(
        rows,
        ["a", "b"],
        windows(minute(599), timedelta(minutes=200), trained_on(0, 299)),
        None,
        check_settings(DriftMonitorInput(), DriftSettings()),
        target=TARGET,
        champion=trained_on(0, 299),
        sentiment_scored=True,
        checked_at=T0,
    )
    reference, recent = report.reference, report.recent
    assert (reference.source, reference.start, reference.end, reference.rows) == (
        "training",
        minute(0),
        minute(299),
        300,
    )
    assert (recent.source, recent.start, recent.end, recent.rows) == ("recent", minute(399), minute(599), 200)
    assert sorted(f.feature for f in report.features) == ["a", "b"]  # no features named: every input
    assert not any("overlap" in n or "sentiment" in n or "training window" in n for n in report.notes)


def test_a_champion_without_a_training_window_is_compared_with_the_window_before_the_recent_one():
    champion = Champion("1", "persistence")
    span = windows(minute(599), timedelta(minutes=200), champion)
    assert (span.source, span.reference_span) == ("preceding", (minute(199), minute(399)))
    report = compare_windows(
        input_rows(),
        ["a", "b"],
        span,
        None,
        check_settings(DriftMonitorInput(features=["b"]), DriftSettings()),
        target=TARGET,
        champion=champion,
        sentiment_scored=False,
        checked_at=T0,
    )
    assert (report.reference.source, report.reference.rows, report.recent.rows) == ("preceding", 200, 200)
    assert [f.feature for f in report.features] == ["b"]
    assert (
        "champion v1 (persistence) has no training window: the reference is the window of the same length "
        "before the recent one" in report.notes
    )
    assert "no sentiment scores for BTC/USD's coin: sentiment not compared" in report.notes


def test_a_training_window_reaching_into_the_recent_one_is_said_with_its_rows():
    champion = trained_on(0, 449)
    report = compare_windows(
        input_rows(),
        ["a"],
        windows(minute(599), timedelta(minutes=200), champion),
        None,
        check_settings(DriftMonitorInput(), DriftSettings()),
        target=TARGET,
        champion=champion,
        sentiment_scored=True,
        checked_at=T0,
    )
    assert "the training window overlaps the recent window by 50 rows" in report.notes  # minutes 400..449


def test_only_the_champions_own_outcomes_are_its_live_figures():
    summary = [figures(version="2"), figures(name="other"), figures()]
    assert champion_figures(summary, TARGET) is summary[2]
    assert champion_figures(summary[:2], TARGET) is None
    assert champion_figures(summary, TARGET.model_copy(update={"model_version": None})) is None


def test_a_target_without_candles_has_nothing_to_compare_and_no_breach():
    report = nothing_to_compare(TARGET, check_settings(DriftMonitorInput(), DriftSettings()), T0)
    assert not report.breached and report.features == [] and report.reference.source == "none"
    assert report.notes[0] == "no candles of BTC/USD at 60s: nothing to compare"


# --- what a breach does about a retrain ----------------------------------------------------------------

WORKFLOW_ID = "training-BTCUSD-60s-h1"
COOLDOWN = timedelta(hours=6)


def retrain_request(triggered_by: str = "drift-BTCUSD-60s-h1/run-2") -> RetrainRequest:
    report = nothing_to_compare(TARGET, check_settings(DriftMonitorInput(), DriftSettings()), T0)
    report = report.model_copy(update={"breaches": ["a: PSI 0.9 > 0.25 + noise floor 0.01"]})
    return RetrainRequest(
        report=report, monitor=DriftMonitorInput(), triggered_by=triggered_by, task_queue="q"
    )


def last(
    status: WorkflowExecutionStatus, closed_ago: timedelta | None, triggered_by: str | None = None
) -> LastRetrain:
    closed = None if closed_ago is None else T0 - closed_ago
    return LastRetrain(run_id="r1", status=status, closed_at=closed, triggered_by=triggered_by)


@pytest.mark.parametrize(
    "previous",
    [
        None,  # the target was never retrained
        last(WorkflowExecutionStatus.RUNNING, None),  # the server refuses the start: the breach attaches
        last(WorkflowExecutionStatus.COMPLETED, COOLDOWN),  # ended just as long ago as the cooldown
        last(WorkflowExecutionStatus.FAILED, timedelta(days=2)),
    ],
    ids=["never", "running", "cooldown-over", "long-ago"],
)
def test_a_breach_starts_a_retrain(previous):
    assert retrain_verdict(previous, retrain_request(), WORKFLOW_ID, COOLDOWN, T0) is None


def test_a_retrain_that_ended_within_the_cooldown_is_not_repeated():
    previous = last(WorkflowExecutionStatus.COMPLETED, timedelta(minutes=90))
    outcome = retrain_verdict(previous, retrain_request(), WORKFLOW_ID, COOLDOWN, T0)
    assert outcome is not None and (outcome.action, outcome.workflow_id, outcome.run_id) == (
        "skipped",
        WORKFLOW_ID,
        "r1",
    )
    assert outcome.detail == "the last retrain ended 90 min ago (COMPLETED), within the 6 h cooldown"
    assert retrain_verdict(previous, retrain_request(), WORKFLOW_ID, timedelta(0), T0) is None  # no cooldown


def test_the_retrain_a_retried_activity_started_itself_is_reported_as_started():
    request = retrain_request()
    for status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
        previous = last(
            status, None if status == WorkflowExecutionStatus.RUNNING else timedelta(0), request.triggered_by
        )
        outcome = retrain_verdict(previous, request, WORKFLOW_ID, COOLDOWN, T0)
        assert outcome is not None and (outcome.action, outcome.run_id) == ("started", "r1")
        assert outcome.detail == request.report.retrain_reason()
