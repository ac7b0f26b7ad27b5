"""TrainingWorkflow: dataset -> screen -> tune -> evaluate -> register -> promote (or keep the champion).

One activity per step, so a killed worker resumes after the last completed step. The dataset goes to the
retrain's MLflow run and every later step downloads it, so a step may run on any training worker. Each
family's Optuna trials run as several batch activities at once (any free worker takes one), adding to
one study in PostgreSQL; a retried batch resumes from the trials it already stored. The `progress` query
returns the current step and its figures. With `"target": "volatility"` the same steps retrain the
target's volatility model (activities/volatility.py) into its own registered model (`...-vol`).
Start it with `cryptopredict train`, on the daily schedule, or with the Temporal CLI (docs/training.md):
    temporal workflow start --type TrainingWorkflow --task-queue training \
        --workflow-id training-BTCUSD-60s-h1 --input '{"pair": "BTC/USD", "interval_s": 60}'
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.training import TrainingActivities
    from activities.volatility import VolatilityActivities
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
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
        TrainingProgress,
        TrainingResult,
        TrainingRun,
        TrialBatch,
        TunedCandidate,
        TuneInput,
    )
    from cryptopredict.topics import registered_model_name


@dataclass(frozen=True)
class Steps:
    """The activities of one target's retrain; reading a study's best trial, registering and promoting
    are shared (TrainingActivities)."""

    dataset: Callable[[Any, DatasetInput], TrainingRun]
    # The dataset step as histories from before DatasetInput scheduled it: (request, run key).
    dataset_two_args: Callable[[Any, TrainingInput, str], TrainingRun]
    champion: Callable[[Any, StepInput], ModelRef]
    screen: Callable[[Any, StepInput], ScreeningResult]
    tune: Callable[[Any, TrialBatch], int]
    evaluate: Callable[[Any, EvaluateInput], Evaluation]
    untuned: tuple[str, ...]  # families screened by their walk-forward loss, with nothing to tune
    skill: str  # the metric the progress query shows at registration
    evaluate_options: policies.ActivityOptions


STEPS = {
    "price": Steps(
        TrainingActivities.prepare_training_dataset,
        TrainingActivities.build_training_dataset,
        TrainingActivities.ensure_champion,
        TrainingActivities.screen_candidates,
        TrainingActivities.tune_trials,
        TrainingActivities.evaluate_challenger,
        untuned=(),
        skill="skill_vs_persistence",
        evaluate_options=policies.RETRAIN_EVALUATE_PRICE,
    ),
    "volatility": Steps(
        VolatilityActivities.prepare_volatility_dataset,
        VolatilityActivities.build_volatility_dataset,
        VolatilityActivities.ensure_volatility_champion,
        VolatilityActivities.screen_volatility,
        VolatilityActivities.tune_volatility_trials,
        VolatilityActivities.evaluate_volatility,
        untuned=("har",),
        skill="vol_skill_vs_naive",
        evaluate_options=policies.RETRAIN_EVALUATE_VOLATILITY,
    ),
}
# Runs from before this patch scheduled the dataset step with two arguments; they replay that way.
DATASET_INPUT_PATCH = "dataset-input-model"


def split_trials(trials: int, batches: int) -> list[int]:
    """`trials` in at most `batches` near-equal shares, none empty: 10 in 4 is [3, 3, 2, 2]."""
    n = min(trials, batches)
    return [trials // n + (i < trials % n) for i in range(n)]


@workflow.defn(name=workflow_types.TRAINING)
class TrainingWorkflow:
    def __init__(self) -> None:
        self._progress = TrainingProgress(step="starting")

    @workflow.query(name="progress")
    def progress(self) -> TrainingProgress:
        return self._progress

    def _at(self, step: str, **figures: float | int | str | None) -> None:
        self._progress = TrainingProgress(step=step, figures={**self._progress.figures, **figures})
        workflow.logger.info("step %s %s", step, figures)

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        heartbeat = timedelta(seconds=request.heartbeat_timeout_s)
        steps = STEPS[request.target]
        name = registered_model_name(
            request.pair, request.interval_s, request.horizon_candles, target=request.target
        )
        info = workflow.info()
        self._at("dataset", reason=request.reason, target=request.target)
        key = f"{info.workflow_id}/{info.run_id}"
        if workflow.patched(DATASET_INPUT_PATCH):
            run = await workflow.execute_activity_method(
                steps.dataset,
                DatasetInput(request=request, run_key=key),
                **policies.RETRAIN_DATASET(heartbeat),
            )
        else:
            run = await workflow.execute_activity_method(
                steps.dataset_two_args, args=[request, key], **policies.RETRAIN_DATASET(heartbeat)
            )
        dataset, mlflow_run_id = run.dataset, run.mlflow_run_id
        self._at(
            "champion",
            rows=dataset.rows,
            dataset_hash=dataset.content_hash,
            estimator=dataset.volatility_estimator,
        )
        step = StepInput(
            request=request, dataset=dataset, mlflow_run_id=mlflow_run_id, workflow_id=info.workflow_id
        )
        champion = await workflow.execute_activity_method(
            steps.champion, step, **policies.RETRAIN_CHAMPION(heartbeat)
        )

        self._at("screen", champion=f"v{champion.version} ({champion.flavor})")
        screening = await workflow.execute_activity_method(
            steps.screen, step, **policies.RETRAIN_SCREEN(heartbeat)
        )
        tuned = [
            TunedCandidate(family=s.name, params={}, cv_mae=s.mean_mae, trials=0, study_name="")
            for s in screening.screened
            if s.name in steps.untuned
        ]
        shares = split_trials(request.trials, request.tuning_batches)
        for family in screening.families:  # one at a time: its batches fill the workers' free slots
            self._at("tune", family=family, screened=len(screening.screened), batches=len(shares))
            tune = TuneInput(
                step=step, family=family, study_name=f"{info.workflow_id}-{info.run_id}-{family}"
            )
            await asyncio.gather(
                *(
                    workflow.execute_activity_method(
                        steps.tune,
                        TrialBatch(tune=tune, batch=batch, trials=trials),
                        **policies.RETRAIN_TUNE_BATCH(heartbeat),
                    )
                    for batch, trials in enumerate(shares)
                )
            )
            tuned.append(
                await workflow.execute_activity_method(
                    TrainingActivities.tune_candidate, tune, **policies.RETRAIN_BEST_TRIAL(heartbeat)
                )
            )

        self._at("evaluate", tuned=", ".join(f"{t.family} {t.cv_mae:.3g}" for t in tuned))
        evaluation = await workflow.execute_activity_method(
            steps.evaluate,
            EvaluateInput(step=step, tuned=tuned, champion=champion),
            **steps.evaluate_options(heartbeat),
        )
        self._at(
            "register",
            **{steps.skill: evaluation.metrics.get(steps.skill)},
            dm_pvalue=evaluation.dm_pvalue_vs_persistence,
        )
        challenger = await workflow.execute_activity_method(
            TrainingActivities.register_challenger,
            RegisterInput(step=step, evaluation=evaluation, registered_model=name),
            **policies.RETRAIN_REGISTER(heartbeat),
        )
        self._at("promote", version=challenger.version, promote=str(evaluation.promote))
        now_champion = await workflow.execute_activity_method(
            TrainingActivities.promote_or_keep,
            PromoteInput(step=step, evaluation=evaluation, challenger=challenger),
            **policies.RETRAIN_PROMOTE(heartbeat),
        )
        self._at("done", champion=f"v{now_champion.version} ({now_champion.flavor})")
        return TrainingResult(
            target=request.target,
            promoted=evaluation.promote,
            champion=now_champion,
            challenger=challenger,
            reasons=evaluation.reasons,
            dataset=dataset,
            metrics=evaluation.metrics,
            dm_pvalue=evaluation.dm_pvalue_vs_persistence,
            dm_pvalue_vs_champion=evaluation.dm_pvalue_vs_champion,
            intervals=evaluation.intervals,
            screened=screening.screened,
            tuned=tuned,
            mlflow_run_id=mlflow_run_id,
        )


@workflow.defn(name=workflow_types.SCHEDULED_RETRAIN)
class ScheduledRetrainWorkflow:
    """What the retrain schedule starts, every `model.retrain_every_s`: the target's TrainingWorkflow under
    its well-known id (activity `start_scheduled_retrain`). Temporal gives a scheduled run an id of its
    own (the action's id plus the scheduled time), so a schedule starting TrainingWorkflow itself would
    run beside a retrain started by hand or by drift, where the well-known id keeps it to one at a time."""

    @workflow.run
    async def run(self, request: TrainingInput) -> str:
        return await workflow.execute_activity_method(
            TrainingActivities.start_scheduled_retrain,
            request,
            **policies.START_SCHEDULED_RETRAIN(),
        )
