"""What a drift check compares (cryptopredict.ml.drift_check) and what a breach does about a retrain
(cryptopredict.drift_monitor.retrain_verdict): the decisions of the DriftMonitorWorkflow's activities,
without the registry, the store or Temporal. The PSI and the report's verdicts are test_drift.py's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from temporalio.client import WorkflowExecutionStatus

from cryptopredict.drift_monitor import LastRetrain, retrain_verdict
from cryptopredict.ml.dataset import FEATURE_TIME
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
from cryptopredict.models.drift import DriftMonitorInput, DriftTarget, DriftThresholds, RetrainRequest
from cryptopredict.settings import DriftSettings

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


def figures(name: str, version: str) -> LiveFigures:
    return LiveFigures(
        model_name=name,
        model_version=version,
        n=400,
        live_mae=1.0,
        persistence_mae=1.0,
        skill_vs_persistence=0.0,
        interval_coverage=None,
    )


def test_only_the_champions_own_outcomes_are_its_live_figures():
    summary = [figures(TARGET.model_name, "2"), figures("other", "3"), figures(TARGET.model_name, "3")]
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
