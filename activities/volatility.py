"""Volatility-target activities of TrainingWorkflow: Temporal's side of cryptopredict.retrain.volatility.
Tuning's best trial, registering and promoting are the shared activities of activities/training.py.
The steps are light, so they heartbeat at their milestones rather than from a side thread."""

from __future__ import annotations

from temporalio import activity

from cryptopredict.models import ModelRef
from cryptopredict.models.training import (
    DatasetInput,
    EvaluateInput,
    Evaluation,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingRun,
    TrialBatch,
)
from cryptopredict.retrain import volatility
from cryptopredict.retrain.runs import RetrainRuns
from cryptopredict.settings import Settings


class VolatilityActivities:
    def __init__(self, settings: Settings) -> None:
        self.runs = RetrainRuns(settings)

    @activity.defn(name="prepare_volatility_dataset")
    def prepare_volatility_dataset(self, request: DatasetInput) -> TrainingRun:
        return volatility.build_run(self.runs, request.request, request.run_key, activity.heartbeat)

    @activity.defn(name="build_volatility_dataset")
    def build_volatility_dataset(self, request: TrainingInput, key: str) -> TrainingRun:
        """The dataset step as workflows started before DatasetInput schedule it (two arguments)."""
        return self.prepare_volatility_dataset(DatasetInput(request=request, run_key=key))

    @activity.defn(name="ensure_volatility_champion")
    def ensure_volatility_champion(self, step: StepInput) -> ModelRef:
        return volatility.ensure_champion(self.runs, step)

    @activity.defn(name="screen_volatility")
    def screen_volatility(self, step: StepInput) -> ScreeningResult:
        return volatility.screen(self.runs, step, activity.heartbeat)

    @activity.defn(name="tune_volatility_trials")
    def tune_volatility_trials(self, batch: TrialBatch) -> int:
        return volatility.tune_batch(self.runs, batch, activity.heartbeat)

    @activity.defn(name="evaluate_volatility")
    def evaluate_volatility(self, request: EvaluateInput) -> Evaluation:
        return volatility.evaluate(self.runs, request, activity.heartbeat)
