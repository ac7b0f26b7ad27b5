"""The drift monitor's input, its report (the DriftMonitorWorkflow's result, shown in the Temporal UI)
and the flat row it leaves in the feature store (table and topic `drift_reports`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cryptopredict.models.base import DomainModel, UtcDatetime
from cryptopredict.topics import KRAKEN, Exchange, split_market

TrainingOverride = float | int | str | bool | None


class DriftMonitorInput(BaseModel):
    """One drift check of (pair, interval, horizon). A threshold left None is the worker's
    `drift` setting at the time of the check, so a changed setting applies to existing schedules."""

    pair: str = "BTC/USD"
    interval_s: int = Field(default=60, gt=0)
    horizon_candles: int = Field(default=1, gt=0)
    recent_window_s: float | None = Field(default=None, gt=0)
    psi_threshold: float | None = Field(default=None, gt=0)
    psi_bins: int | None = Field(default=None, ge=2)
    features: list[str] | None = None
    min_rows: int | None = Field(default=None, ge=10)
    skill_threshold: float | None = None
    min_outcomes: int | None = Field(default=None, ge=1)
    retrain_cooldown_s: float | None = Field(default=None, ge=0)
    # False: report only, never start a retrain (`cryptopredict drift --no-retrain`).
    retrain: bool = True
    # Fields of the retrain's TrainingInput over the configured ones (smaller budgets, for instance).
    training: dict[str, TrainingOverride] = Field(default_factory=dict)
    # Where the retrain runs; None: the monitor's own task queue (the worker that runs both).
    training_task_queue: str | None = None


class DriftThresholds(BaseModel):
    psi: float = Field(default=0.25, gt=0)
    bins: int = Field(default=10, ge=2)
    min_rows: int = Field(default=100, ge=1)
    skill: float = 0.0
    min_outcomes: int = Field(default=360, ge=1)


class DriftTarget(BaseModel):
    pair: str
    interval_s: int
    horizon_candles: int
    model_name: str
    model_version: str | None  # the champion checked; None when the target has no champion yet
    model_kind: str | None  # "persistence", "linear", "xgboost", ...


class DriftWindow(BaseModel):
    """`source`: "training" (the champion's dataset range from its MLflow run), "preceding" (as long as
    the recent window, just before it: the champion has no training window) or "recent"."""

    source: str
    start: UtcDatetime | None
    end: UtcDatetime | None
    rows: int


class FeatureDrift(BaseModel):
    feature: str
    psi: float | None  # None: not compared (a window had too few usable values)
    # PSI expected by chance for this feature's autocorrelation and window sizes (cryptopredict.ml.drift);
    # breached means psi > threshold + noise_floor.
    noise_floor: float | None = None
    reference_rows: int
    recent_rows: int
    breached: bool


class LiveSkill(BaseModel):
    """The champion's outcomes from the ledger (view prediction_outcomes) in the recent window."""

    model_version: str
    n: int
    live_mae: float
    persistence_mae: float
    skill_vs_persistence: float | None
    evaluated: bool  # at least the minimum number of outcomes
    breached: bool


class RetrainOutcome(BaseModel):
    """What a breach did: started the target's TrainingWorkflow, attached to one already running, or
    skipped it (a retrain ended within the cooldown)."""

    action: Literal["started", "attached", "skipped"]
    workflow_id: str
    run_id: str | None
    detail: str


class DriftReport(BaseModel):
    target: DriftTarget
    checked_at: UtcDatetime
    reference: DriftWindow
    recent: DriftWindow
    thresholds: DriftThresholds
    features: list[FeatureDrift]  # largest PSI first
    live: LiveSkill | None
    breaches: list[str]  # human-readable, one per breached feature or figure; empty: no breach
    notes: list[str] = Field(default_factory=list)  # what was not compared, and why
    retrain: RetrainOutcome | None = None

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    @property
    def max_psi(self) -> FeatureDrift | None:
        compared = [f for f in self.features if f.psi is not None]
        return max(compared, key=lambda f: f.psi or 0.0) if compared else None

    def retrain_reason(self, limit: int = 5) -> str:
        """The `reason` of the TrainingInput a breach starts: the breaches, the biggest first."""
        shown = "; ".join(self.breaches[:limit])
        more = f"; and {len(self.breaches) - limit} more" if len(self.breaches) > limit else ""
        return f"drift: {shown}{more}"

    def summary(self) -> str:
        """One line, for the Temporal UI's current details and logs."""
        top = self.max_psi
        psi = (
            f"max PSI {top.psi:.3g} ({top.feature})" if top is not None and top.psi is not None else "no PSI"
        )
        skill = ""
        if self.live is not None and self.live.skill_vs_persistence is not None:
            skill = f", live skill {self.live.skill_vs_persistence:+.3f} over {self.live.n}"
        verdict = f"BREACH ({len(self.breaches)})" if self.breached else "no breach"
        retrain = f"; retrain {self.retrain.action} {self.retrain.workflow_id}" if self.retrain else ""
        return f"{self.target.model_name} v{self.target.model_version}: {verdict}, {psi}{skill}{retrain}"

    def table(self) -> str:
        """The per-feature table `cryptopredict drift` prints."""
        lines = [
            f"{self.target.pair} {self.target.interval_s}s h{self.target.horizon_candles}, champion "
            f"v{self.target.model_version} ({self.target.model_kind}), checked {self.checked_at:%Y-%m-%d %H:%M}",
            f"reference ({self.reference.source}): {_span(self.reference)}",
            f"recent: {_span(self.recent)}",
            "",
            f"{'feature':<24} {'psi':>9} {'floor':>7} {'ref rows':>9} {'recent':>7}  breach",
        ]
        for f in self.features:
            psi = "-" if f.psi is None else f"{f.psi:.4f}"
            floor = "-" if f.noise_floor is None else f"{f.noise_floor:.3f}"
            mark = "  BREACH" if f.breached else ""
            lines.append(
                f"{f.feature:<24} {psi:>9} {floor:>7} {f.reference_rows:>9} {f.recent_rows:>7}{mark}"
            )
        if self.live is not None:
            skill = self.live.skill_vs_persistence
            lines.append(
                f"live v{self.live.model_version}: {self.live.n} outcomes, MAE {self.live.live_mae:.4g} vs "
                f"persistence {self.live.persistence_mae:.4g}, skill "
                f"{'-' if skill is None else f'{skill:+.4f}'}{'  BREACH' if self.live.breached else ''}"
            )
        lines += [f"note: {n}" for n in self.notes] + [f"breach: {b}" for b in self.breaches]
        if self.retrain is not None:
            lines.append(f"retrain {self.retrain.action}: {self.retrain.workflow_id} ({self.retrain.detail})")
        return "\n".join(lines)


def _span(window: DriftWindow) -> str:
    if window.start is None or window.end is None:
        return f"{window.rows} rows"
    return f"{window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M}, {window.rows} rows"


class RetrainRequest(BaseModel):
    report: DriftReport
    monitor: DriftMonitorInput
    triggered_by: str  # "<drift workflow id>/<run id>": recorded in the retrain's memo
    task_queue: str


class RecordInput(BaseModel):
    report: DriftReport
    workflow_id: str
    run_id: str


class DriftRecord(DomainModel):
    """One drift check as a row of table `drift_reports` (and a record of topic `drift_reports`, which
    RisingWave ingests): flat columns for SQL and dashboards, the PSI of each feature as JSON. The target's
    market key is stored as its venue and bare pair, as the other tables of a market are."""

    workflow_id: str
    run_id: str
    exchange: Exchange = KRAKEN
    pair: str
    interval_s: int
    horizon_candles: int
    checked_at: UtcDatetime
    model_name: str
    model_version: str | None
    model_kind: str | None
    reference_source: str
    reference_start: UtcDatetime | None
    reference_end: UtcDatetime | None
    reference_rows: int
    recent_start: UtcDatetime | None
    recent_end: UtcDatetime | None
    recent_rows: int
    psi_threshold: float
    max_psi: float | None
    max_psi_feature: str | None
    psi: dict[str, float | None]
    live_outcomes: int | None
    live_skill: float | None
    breached: bool
    reasons: list[str]
    retrain_action: str | None
    retrain_workflow_id: str | None
    retrain_run_id: str | None

    @classmethod
    def of(cls, report: DriftReport, workflow_id: str, run_id: str) -> DriftRecord:
        top = report.max_psi
        live, retrain = report.live, report.retrain
        exchange, pair = split_market(report.target.pair)
        return cls(
            workflow_id=workflow_id,
            run_id=run_id,
            exchange=exchange,
            pair=pair,
            interval_s=report.target.interval_s,
            horizon_candles=report.target.horizon_candles,
            checked_at=report.checked_at,
            model_name=report.target.model_name,
            model_version=report.target.model_version,
            model_kind=report.target.model_kind,
            reference_source=report.reference.source,
            reference_start=report.reference.start,
            reference_end=report.reference.end,
            reference_rows=report.reference.rows,
            recent_start=report.recent.start,
            recent_end=report.recent.end,
            recent_rows=report.recent.rows,
            psi_threshold=report.thresholds.psi,
            max_psi=None if top is None else top.psi,
            max_psi_feature=None if top is None else top.feature,
            psi={f.feature: f.psi for f in report.features},
            live_outcomes=None if live is None else live.n,
            live_skill=None if live is None else live.skill_vs_persistence,
            breached=report.breached,
            reasons=report.breaches,
            retrain_action=None if retrain is None else retrain.action,
            retrain_workflow_id=None if retrain is None else retrain.workflow_id,
            retrain_run_id=None if retrain is None else retrain.run_id,
        )
