"""Inputs and outputs of the training workflow and its activities (one model per call, so fields can
be added without breaking callers or saved histories)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from cryptopredict.models.base import UtcDatetime
from cryptopredict.models.ml import ModelRef


class TrainingInput(BaseModel):
    """One retrain of (pair, interval, horizon). Every field has a default, so
    `temporal workflow start --input '{"pair": "BTC/USD", "interval_s": 60}'` is a complete request."""

    pair: str = "BTC/USD"
    # What is forecast: the price (log return with an interval) or the volatility over the horizon
    # (cryptopredict.ml.volatility_target); each has its own registered model and champion.
    target: Literal["price", "volatility"] = "price"
    interval_s: int = Field(default=60, gt=0)
    horizon_candles: int = Field(default=1, gt=0)
    lags: int = Field(default=10, gt=0)
    # Market keys of the pair's coin on other venues whose lagged returns and price spread are features
    # (cryptopredict.features.cross_venue; features.cross_venue), and how many lagged returns of each.
    cross_venue: list[str] = Field(default_factory=list)
    cross_venue_lags: int = Field(default=3, gt=0)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_rows: int = Field(default=300, gt=0)
    folds: int = Field(default=4, ge=2)
    screen_top_k: int = Field(default=3, ge=1)
    # Screening ranks many regressor families: the most recent rows of each fold are enough for that.
    screen_time_limit_s: float = Field(default=30.0, gt=0)
    screen_max_rows: int = Field(default=5_000, gt=0)
    trials: int = Field(default=20, ge=1)  # complete Optuna trials per tuned family
    # Each family's trials run as this many activities at once, so any free training worker takes some.
    tuning_batches: int = Field(default=4, ge=1)
    tune_max_rows: int = Field(default=20_000, gt=0)  # most recent training rows per tuning fold
    tuning_timeout_s: float | None = Field(default=None, gt=0)
    interval_coverage: float = Field(default=0.8, gt=0, lt=1)
    dm_alpha: float = Field(default=0.05, gt=0, lt=1)
    # A skill above this against persistence at these horizons is a leak, not a forecast.
    max_plausible_skill: float = Field(default=0.5, gt=0, le=1)
    # A gain over persistence and the champion smaller than this is not worth a new model (ml.evaluation).
    min_skill: float = Field(default=0.001, ge=0, lt=1)
    seed: int = 0
    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    reason: str = "requested"  # why this retrain runs (schedule, CLI, drift), shown in the history


class DatasetSummary(BaseModel):
    # The dataset's parquet file, an artifact of the retrain's MLflow run: every worker downloads it
    # through the tracking server (mlflow-artifacts:/... in the stack), none needs another's disk.
    uri: str
    pair: str
    interval_s: int
    horizon_candles: int
    rows: int
    dropped: dict[str, int]
    features: list[str]
    start: UtcDatetime
    end: UtcDatetime
    content_hash: str
    indicator_source: str  # "store" or "computed" from the candles by the stream's code
    sentiment: bool  # sentiment aggregates of the coin are among the features
    # The per-candle volatility measure of a volatility target (volatility_target.Estimator); None: price.
    volatility_estimator: str | None = None


class DatasetInput(BaseModel):
    """The dataset step: the request, and the key the retrain's MLflow run is tagged with (the
    workflow's id and run id), so a retried attempt finds and replaces the run of one that died."""

    request: TrainingInput
    run_key: str


class TrainingRun(BaseModel):
    """What the dataset step returns: the retrain's MLflow run and the dataset logged in it."""

    mlflow_run_id: str
    dataset: DatasetSummary


class StepInput(BaseModel):
    request: TrainingInput
    dataset: DatasetSummary
    mlflow_run_id: str
    workflow_id: str


class ScreenedCandidate(BaseModel):
    name: str
    family: str | None  # None: no safe (non-pickle) format to serve it in
    mean_mae: float
    seconds: float


class ScreeningResult(BaseModel):
    screened: list[ScreenedCandidate]
    families: list[str]  # tuned next, in order


class TuneInput(BaseModel):
    """One family's tuning: the Optuna study its trial batches add to, read by tune_candidate."""

    step: StepInput
    family: str
    study_name: str


class TrialBatch(BaseModel):
    """One activity's share of a family's trials, added to the family's study."""

    tune: TuneInput
    batch: int  # the study counts each batch's complete trials apart: a retry runs only the missing
    trials: int = Field(ge=1)


class TunedCandidate(BaseModel):
    family: str
    params: dict[str, float | int | str | bool]
    cv_mae: float  # mean walk-forward validation MAE of the log return
    trials: int
    study_name: str


class EvaluateInput(BaseModel):
    step: StepInput
    tuned: list[TunedCandidate]
    champion: ModelRef


class Evaluation(BaseModel):
    """The challenger on the test window. For a volatility target, `dm_pvalue_vs_persistence` is the
    p-value against the naive trailing-mean forecast, its baseline."""

    family: str
    model_uri: str
    metrics: dict[str, float]  # test window: mae, rmse, skill_vs_persistence, coverage, ...
    promote: bool
    reasons: list[str]
    dm_pvalue_vs_persistence: float
    dm_pvalue_vs_champion: float | None
    # The adaptive interval against the constant-width one on the test window (ml.adaptive.interval_report).
    intervals: dict[str, float] = Field(default_factory=dict)


class RegisterInput(BaseModel):
    step: StepInput
    evaluation: Evaluation
    registered_model: str


class PromoteInput(BaseModel):
    step: StepInput
    evaluation: Evaluation
    challenger: ModelRef


class TrainingResult(BaseModel):
    target: Literal["price", "volatility"] = "price"
    promoted: bool
    champion: ModelRef  # after the run: the challenger if promoted, else the one that stayed
    challenger: ModelRef
    reasons: list[str]
    dataset: DatasetSummary
    metrics: dict[str, float]
    dm_pvalue: float  # against persistence
    dm_pvalue_vs_champion: float | None
    intervals: dict[str, float] = Field(default_factory=dict)
    screened: list[ScreenedCandidate]
    tuned: list[TunedCandidate]
    mlflow_run_id: str

    def decision_line(self) -> dict[str, object]:
        """The line `cryptopredict train --wait` prints last."""
        if self.target == "volatility":
            return {
                "target": "volatility",
                "promoted": self.promoted,
                "model_version": self.challenger.version,
                "family": self.challenger.flavor,
                "estimator": self.dataset.volatility_estimator,
                "vol_skill_vs_naive": _finite_or_none(self.metrics.get("vol_skill_vs_naive")),
                "vol_dm_pvalue": _finite_or_none(self.dm_pvalue),
                "vol_dm_pvalue_vs_champion": _finite_or_none(self.dm_pvalue_vs_champion),
                "vol_log_mae": _finite_or_none(self.metrics.get("vol_log_mae")),
                "reasons": self.reasons,
            }
        return {
            "promoted": self.promoted,
            "model_version": self.challenger.version,
            "skill_vs_persistence": self.metrics.get("skill_vs_persistence"),
            "dm_pvalue": self.dm_pvalue,
            "interval_coverage": self.metrics.get("interval_coverage"),
            "coverage_by_regime": {
                regime: _finite_or_none(self.intervals.get(f"coverage_{regime}"))
                for regime in ("calm", "mid", "wild")
            },
            "interval_score_vs_constant": _finite_or_none(self.intervals.get("interval_score_vs_constant")),
            "reasons": self.reasons,
        }


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a regime without test rows is reported as null."""
    return value if value is not None and math.isfinite(value) else None


class TrainingProgress(BaseModel):
    """What the workflow's `progress` query returns."""

    step: str
    figures: dict[str, float | int | str | None] = Field(default_factory=dict)
