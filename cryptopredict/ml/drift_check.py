"""What one drift check compares, decided from what was read: the settings it uses, the champion's
training window or the window before the recent one as the reference, the features, the champion's live
figures, and the notes that say what was not compared and why. Pure; cryptopredict.drift_monitor reads
the registry and the store and calls these. The arithmetic is cryptopredict.ml.drift."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import pandas as pd

from cryptopredict.ml.dataset import FEATURE_TIME
from cryptopredict.ml.drift import between, drift_report
from cryptopredict.ml.live import LiveFigures
from cryptopredict.models.drift import DriftMonitorInput, DriftReport, DriftTarget, DriftThresholds
from cryptopredict.settings import DriftSettings

T = TypeVar("T")


@dataclass(frozen=True)
class CheckSettings:
    """A check's settings: the input's values over the worker's `drift` settings of the moment (a value
    left None in the input is the setting), so a changed setting applies to existing schedules."""

    thresholds: DriftThresholds
    recent_window: timedelta
    features: list[str]  # the model inputs compared; empty: all of them
    retrain_cooldown: timedelta


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value


def check_settings(request: DriftMonitorInput, configured: DriftSettings) -> CheckSettings:
    return CheckSettings(
        thresholds=DriftThresholds(
            psi=_pick(request.psi_threshold, configured.psi_threshold),
            bins=_pick(request.psi_bins, configured.psi_bins),
            min_rows=_pick(request.min_rows, configured.min_rows),
            skill=_pick(request.skill_threshold, configured.skill_threshold),
            min_outcomes=_pick(request.min_outcomes, configured.min_outcomes),
        ),
        recent_window=timedelta(seconds=_pick(request.recent_window_s, configured.recent_window_s)),
        features=list(_pick(request.features, configured.features)),
        retrain_cooldown=timedelta(seconds=_pick(request.retrain_cooldown_s, configured.retrain_cooldown_s)),
    )


@dataclass(frozen=True)
class Champion:
    """The registered version a check judges, with the params of the MLflow run that trained it; all
    empty when the target has no champion yet."""

    version: str | None = None
    kind: str | None = None  # "persistence", "linear", "xgboost", ...
    params: dict[str, str] = field(default_factory=dict)

    def training_window(self) -> tuple[datetime, datetime] | None:
        """The dataset range its retrain logged (cryptopredict.retrain.runs.run_params); None for a
        version trained on nothing (persistence) or logged without one."""
        if "dataset_start" not in self.params or "dataset_end" not in self.params:
            return None
        start, end = self.params["dataset_start"], self.params["dataset_end"]
        return datetime.fromisoformat(start), datetime.fromisoformat(end)

    def lags(self, configured: int) -> int:
        """The lags its inputs were built with: its run's, else the configured ones."""
        return int(self.params.get("lags", configured))

    def describe(self) -> str:
        return "none" if self.version is None else f"v{self.version} ({self.kind})"


@dataclass(frozen=True)
class Windows:
    """Reference rows: reference_after < time <= reference_upto; recent rows: recent_after < time <=
    newest. `reference_span` is what the report shows as the reference window."""

    source: str  # "training" or "preceding" (DriftWindow.source)
    reference_after: datetime
    reference_upto: datetime
    reference_span: tuple[datetime, datetime]
    recent_after: datetime
    newest: datetime


def newest_candle(candles: pd.DataFrame) -> datetime:
    """Where the recent window ends: the newest candle, not the wall clock, so a replay of old trades is
    checked the same way as the live feed."""
    stamp: datetime = pd.Timestamp(candles["window_start"].iloc[-1]).to_pydatetime()
    return stamp


def windows(newest: datetime, recent: timedelta, champion: Champion) -> Windows:
    """The recent window (`recent` long, ending at `newest`) and the reference: the champion's training
    window, or, when it has none (persistence, or a version without a logged dataset), the window of the
    same length just before the recent one."""
    recent_after = newest - recent
    trained = champion.training_window()
    if trained is not None:
        start, end = trained
        # `between` excludes its lower bound: the first training row is in.
        return Windows(
            source="training",
            reference_after=start - timedelta(microseconds=1),
            reference_upto=end,
            reference_span=trained,
            recent_after=recent_after,
            newest=newest,
        )
    before = recent_after - recent
    return Windows(
        source="preceding",
        reference_after=before,
        reference_upto=recent_after,
        reference_span=(before, recent_after),
        recent_after=recent_after,
        newest=newest,
    )


def champion_figures(summary: Sequence[LiveFigures], target: DriftTarget) -> LiveFigures | None:
    """The champion's row of the ledger summary; None when it has no outcomes (or there is no champion)."""
    if target.model_version is None:
        return None
    mine = [
        f for f in summary if f.model_name == target.model_name and f.model_version == target.model_version
    ]
    return mine[0] if mine else None


def window_notes(rows: pd.DataFrame, span: Windows, champion: Champion) -> list[str]:
    """What the report says about its windows: the training window reaching into the recent one, or
    the fallback reference of a champion without a training window."""
    if span.source == "training":
        overlap = len(between(rows, max(span.reference_after, span.recent_after), span.reference_upto))
        return [f"the training window overlaps the recent window by {overlap} rows"] if overlap else []
    return [
        f"champion {champion.describe()} has no training window: the reference is the window of the same "
        "length before the recent one"
    ]


def compare_windows(
    rows: pd.DataFrame,
    names: Sequence[str],
    span: Windows,
    figures: LiveFigures | None,
    check: CheckSettings,
    *,
    target: DriftTarget,
    champion: Champion,
    sentiment_scored: bool,
    checked_at: datetime,
) -> DriftReport:
    """The report of one check: the model input rows (cryptopredict.ml.drift.model_input_rows, `names`
    their inputs) split into the two windows, the features the settings name (every input when they
    name none) compared, and the champion's live figures judged."""
    notes = window_notes(rows, span, champion)
    if not sentiment_scored:
        notes.append(f"no sentiment scores for {target.pair}'s coin: sentiment not compared")
    return drift_report(
        between(rows, span.reference_after, span.reference_upto),
        between(rows, span.recent_after, span.newest),
        check.features or list(names),
        figures,
        check.thresholds,
        target=target,
        checked_at=checked_at,
        reference_source=span.source,
        reference_span=span.reference_span,
        recent_span=(span.recent_after, span.newest),
        notes=notes,
    )


def nothing_to_compare(target: DriftTarget, check: CheckSettings, checked_at: datetime) -> DriftReport:
    """The report of a target without candles."""
    empty = pd.DataFrame(columns=[FEATURE_TIME])
    return drift_report(
        empty,
        empty,
        [],
        None,
        check.thresholds,
        target=target,
        checked_at=checked_at,
        reference_source="none",
        notes=[f"no candles of {target.pair} at {target.interval_s}s: nothing to compare"],
    )
