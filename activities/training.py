"""Training activities: Temporal's side of each retrain step of cryptopredict.retrain.

CPU-heavy steps are sync activities on the worker's thread pool. They heartbeat from a side thread
while they compute (one XGBoost fit can outlast the heartbeat timeout), so a killed worker is noticed
within the timeout and the step is retried elsewhere; a tuning batch resumes its Optuna study from
PostgreSQL. Nothing passes between steps through a local disk: the dataset is an artifact of the
retrain's MLflow run, downloaded by each worker once into its own `local_dir`.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.heartbeat import heartbeating
from cryptopredict import metrics, workflow_types
from cryptopredict.model_events import publish_model_event
from cryptopredict.models import ModelRef
from cryptopredict.models.training import (
    DatasetInput,
    EvaluateInput,
    Evaluation,
    PromoteInput,
    RegisterInput,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingRun,
    TrialBatch,
    TunedCandidate,
    TuneInput,
)
from cryptopredict.retrain import decision, price
from cryptopredict.retrain.runs import RetrainRuns
from cryptopredict.settings import Settings
from cryptopredict.topics import training_workflow_id


class TrainingActivities:
    """The price target's steps, and the steps every target shares (tuning's best trial, registering,
    promoting, starting a scheduled retrain)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runs = RetrainRuns(settings)

    @activity.defn(name="start_scheduled_retrain")
    async def start_scheduled_retrain(self, request: TrainingInput) -> str:
        """Starts the target's TrainingWorkflow under its well-known id on this worker's queue, unless a
        retrain of the target runs already (then this scheduled one is skipped). Safe to retry: a run this
        activity started shows as the running one."""
        workflow_id = training_workflow_id(
            request.pair, request.interval_s, request.horizon_candles, target=request.target
        )
        try:
            handle = await activity.client().start_workflow(
                workflow_types.TRAINING, request, id=workflow_id, task_queue=activity.info().task_queue
            )
        except WorkflowAlreadyStartedError:
            return f"skipped: {workflow_id} is running already"
        return f"started {workflow_id} (run {handle.result_run_id})"

    @activity.defn(name="prepare_training_dataset")
    def prepare_training_dataset(self, request: DatasetInput) -> TrainingRun:
        with heartbeating() as progress:
            return price.build_run(self.runs, request.request, request.run_key, progress)

    @activity.defn(name="build_training_dataset")
    def build_training_dataset(self, request: TrainingInput, key: str) -> TrainingRun:
        """The dataset step as workflows started before DatasetInput schedule it (two arguments)."""
        return self.prepare_training_dataset(DatasetInput(request=request, run_key=key))

    @activity.defn(name="ensure_champion")
    def ensure_champion(self, step: StepInput) -> ModelRef:
        return price.ensure_champion(self.runs, step)

    @activity.defn(name="screen_candidates")
    def screen_candidates(self, step: StepInput) -> ScreeningResult:
        with heartbeating() as progress:
            return price.screen(self.runs, step, progress)

    @activity.defn(name="tune_trials")
    def tune_trials(self, batch: TrialBatch) -> int:
        with heartbeating() as progress:
            return price.tune_batch(self.runs, batch, progress)

    @activity.defn(name="tune_candidate")
    def tune_candidate(self, tune: TuneInput) -> TunedCandidate:
        return self.runs.best_tuned(tune)

    @activity.defn(name="evaluate_challenger")
    def evaluate_challenger(self, request: EvaluateInput) -> Evaluation:
        with heartbeating() as progress:
            return price.evaluate(self.runs, request, progress)

    @activity.defn(name="register_challenger")
    def register_challenger(self, request: RegisterInput) -> ModelRef:
        return decision.register_challenger(self.runs, request)

    @activity.defn(name="promote_or_keep")
    async def promote_or_keep(self, request: PromoteInput) -> ModelRef:
        """Applies the gate's decision, counts it, and tells serving when the champion changed."""
        champion = await asyncio.to_thread(decision.apply_decision, self.runs, request)
        outcome = "promoted" if request.evaluation.promote else "kept"
        activity.metric_meter().create_counter(metrics.MODEL_DECISIONS, "Promotion gate decisions").add(
            1, {"decision": outcome, "model": champion.name}
        )
        if (event := decision.promotion_event(request, champion)) is not None:
            await publish_model_event(self.settings, event)
        return champion
