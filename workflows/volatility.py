"""The volatility branch of TrainingWorkflow (input `target: "volatility"`): dataset -> naive champion ->
screen (naive, HAR) -> tune XGBoost -> evaluate -> register -> promote, into the target's own registered
model (`...-vol`). The same step boundaries as the price retrain, so a killed worker resumes after the
last completed step; registering, promoting and reading a study's best trial are the price activities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cryptopredict.models import ModelRef
    from cryptopredict.models.training import (
        EvaluateInput,
        Evaluation,
        PromoteInput,
        RegisterInput,
        ScreeningResult,
        StepInput,
        TrainingInput,
        TrainingResult,
        TrainingRun,
        TrialBatch,
        TunedCandidate,
        TuneInput,
    )
    from cryptopredict.topics import registered_model_name

UNTUNED = "har"  # screened with its walk-forward loss; it has no hyper-parameter to tune


async def retrain_volatility(
    request: TrainingInput,
    at: Callable[..., None],
    options: Callable[[float], dict[str, Any]],
    shares: list[int],
) -> TrainingResult:
    """`at(step, **figures)` records progress; `options(minutes)` the activity options; `shares` the
    trials of each tuning batch."""
    name = registered_model_name(
        request.pair, request.interval_s, request.horizon_candles, target="volatility"
    )
    info = workflow.info()
    at("dataset", reason=request.reason, target="volatility")
    run: TrainingRun = await workflow.execute_activity(
        "build_volatility_dataset",
        args=[request, f"{info.workflow_id}/{info.run_id}"],
        result_type=TrainingRun,
        **options(20),
    )
    dataset = run.dataset
    at(
        "champion",
        rows=dataset.rows,
        dataset_hash=dataset.content_hash,
        estimator=dataset.volatility_estimator,
    )
    step = StepInput(
        request=request, dataset=dataset, mlflow_run_id=run.mlflow_run_id, workflow_id=info.workflow_id
    )
    champion: ModelRef = await workflow.execute_activity(
        "ensure_volatility_champion", step, result_type=ModelRef, **options(5)
    )

    at("screen", champion=f"v{champion.version} ({champion.flavor})")
    screening: ScreeningResult = await workflow.execute_activity(
        "screen_volatility", step, result_type=ScreeningResult, **options(30)
    )
    tuned = [
        TunedCandidate(family=s.name, params={}, cv_mae=s.mean_mae, trials=0, study_name="")
        for s in screening.screened
        if s.name == UNTUNED
    ]
    for family in screening.families:
        at("tune", family=family, batches=len(shares))
        tune = TuneInput(step=step, family=family, study_name=f"{info.workflow_id}-{info.run_id}-{family}")
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    "tune_volatility_trials",
                    TrialBatch(tune=tune, batch=batch, trials=trials),
                    result_type=int,
                    **options(60),
                )
                for batch, trials in enumerate(shares)
            )
        )
        tuned.append(
            await workflow.execute_activity("tune_candidate", tune, result_type=TunedCandidate, **options(5))
        )

    at("evaluate", tuned=", ".join(f"{t.family} {t.cv_mae:.3g}" for t in tuned))
    evaluation: Evaluation = await workflow.execute_activity(
        "evaluate_volatility",
        EvaluateInput(step=step, tuned=tuned, champion=champion),
        result_type=Evaluation,
        **options(30),
    )
    at(
        "register",
        vol_skill_vs_naive=evaluation.metrics.get("vol_skill_vs_naive"),
        vol_dm_pvalue=evaluation.dm_pvalue_vs_persistence,
    )
    challenger: ModelRef = await workflow.execute_activity(
        "register_challenger",
        RegisterInput(step=step, evaluation=evaluation, registered_model=name),
        result_type=ModelRef,
        **options(5),
    )
    at("promote", version=challenger.version, promote=str(evaluation.promote))
    now_champion: ModelRef = await workflow.execute_activity(
        "promote_or_keep",
        PromoteInput(step=step, evaluation=evaluation, challenger=challenger),
        result_type=ModelRef,
        **options(5),
    )
    at("done", champion=f"v{now_champion.version} ({now_champion.flavor})")
    return TrainingResult(
        target="volatility",
        promoted=evaluation.promote,
        champion=now_champion,
        challenger=challenger,
        reasons=evaluation.reasons,
        dataset=dataset,
        metrics=evaluation.metrics,
        dm_pvalue=evaluation.dm_pvalue_vs_persistence,
        dm_pvalue_vs_champion=evaluation.dm_pvalue_vs_champion,
        screened=screening.screened,
        tuned=tuned,
        mlflow_run_id=run.mlflow_run_id,
    )
