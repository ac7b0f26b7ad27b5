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
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
    from cryptopredict.models import ModelRef
    from cryptopredict.models.training import (
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
    """The activities of one target's retrain; registering, promoting and reading a study are shared."""

    dataset: str
    champion: str
    screen: str
    tune: str
    evaluate: str
    untuned: tuple[str, ...]  # families screened by their walk-forward loss, with nothing to tune
    skill: str  # the metric the progress query shows at registration
    evaluate_minutes: float


STEPS = {
    "price": Steps(
        "build_training_dataset",
        "ensure_champion",
        "screen_candidates",
        "tune_trials",
        "evaluate_challenger",
        untuned=(),
        skill="skill_vs_persistence",
        evaluate_minutes=60,
    ),
    "volatility": Steps(
        "build_volatility_dataset",
        "ensure_volatility_champion",
        "screen_volatility",
        "tune_volatility_trials",
        "evaluate_volatility",
        untuned=("har",),
        skill="vol_skill_vs_naive",
        evaluate_minutes=30,
    ),
}


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

        def options(minutes: float) -> dict:
            return {
                "start_to_close_timeout": timedelta(minutes=minutes),
                "heartbeat_timeout": heartbeat,
                "retry_policy": policies.STEP,
            }

        steps = STEPS[request.target]
        name = registered_model_name(
            request.pair, request.interval_s, request.horizon_candles, target=request.target
        )
        info = workflow.info()
        self._at("dataset", reason=request.reason, target=request.target)
        run: TrainingRun = await workflow.execute_activity(
            steps.dataset,
            args=[request, f"{info.workflow_id}/{info.run_id}"],
            result_type=TrainingRun,
            **options(20),
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
        champion: ModelRef = await workflow.execute_activity(
            steps.champion, step, result_type=ModelRef, **options(5)
        )

        self._at("screen", champion=f"v{champion.version} ({champion.flavor})")
        screening: ScreeningResult = await workflow.execute_activity(
            steps.screen, step, result_type=ScreeningResult, **options(60)
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
                    workflow.execute_activity(
                        steps.tune,
                        TrialBatch(tune=tune, batch=batch, trials=trials),
                        result_type=int,
                        **options(120),
                    )
                    for batch, trials in enumerate(shares)
                )
            )
            tuned.append(
                await workflow.execute_activity(
                    "tune_candidate", tune, result_type=TunedCandidate, **options(5)
                )
            )

        self._at("evaluate", tuned=", ".join(f"{t.family} {t.cv_mae:.3g}" for t in tuned))
        evaluation: Evaluation = await workflow.execute_activity(
            steps.evaluate,
            EvaluateInput(step=step, tuned=tuned, champion=champion),
            result_type=Evaluation,
            **options(steps.evaluate_minutes),
        )
        self._at(
            "register",
            **{steps.skill: evaluation.metrics.get(steps.skill)},
            dm_pvalue=evaluation.dm_pvalue_vs_persistence,
        )
        challenger: ModelRef = await workflow.execute_activity(
            "register_challenger",
            RegisterInput(step=step, evaluation=evaluation, registered_model=name),
            result_type=ModelRef,
            **options(5),
        )
        self._at("promote", version=challenger.version, promote=str(evaluation.promote))
        now_champion: ModelRef = await workflow.execute_activity(
            "promote_or_keep",
            PromoteInput(step=step, evaluation=evaluation, challenger=challenger),
            result_type=ModelRef,
            **options(5),
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
        outcome: str = await workflow.execute_activity(
            "start_scheduled_retrain",
            request,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=policies.START_RETRAIN,
        )
        return outcome
