"""TrainingWorkflow: dataset -> persistence and XGBoost candidates -> register -> champion alias.

Start it from the CLI (`cryptopredict train`) or with the Temporal CLI:
    temporal workflow start --type TrainingWorkflow --task-queue training \
        --workflow-id training-BTCUSD-60s --input '{"pair": "BTC/USD", "interval_s": 60}'
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from cryptopredict.models import ModelRef
    from cryptopredict.models.training import (
        Candidate,
        DatasetSummary,
        FitInput,
        PromoteInput,
        TrainingInput,
        TrainingResult,
    )
    from cryptopredict.topics import registered_model_name

# Configuration and data errors need a person; retrying them only delays the failure.
NOT_RETRYABLE = ["ValueError", "KeyError"]


@workflow.defn(name="TrainingWorkflow")
class TrainingWorkflow:
    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        retry = RetryPolicy(
            maximum_attempts=3, initial_interval=timedelta(seconds=2), non_retryable_error_types=NOT_RETRYABLE
        )
        dataset: DatasetSummary = await workflow.execute_activity(
            "build_training_dataset",
            request,
            result_type=DatasetSummary,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=retry,
        )
        workflow.logger.info("dataset %s: %d rows", dataset.content_hash, dataset.rows)
        candidates: list[Candidate] = list(
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        "fit_candidate",
                        FitInput(dataset=dataset, kind=kind, test_fraction=request.test_fraction),
                        result_type=Candidate,
                        start_to_close_timeout=timedelta(minutes=20),
                        heartbeat_timeout=timedelta(minutes=5),
                        retry_policy=retry,
                    )
                    for kind in ("persistence", "xgboost")
                )
            )
        )
        name = registered_model_name(request.pair, request.interval_s, request.horizon_candles)
        refs: list[ModelRef] = await workflow.execute_activity(
            "register_and_promote",
            PromoteInput(registered_model=name, candidates=candidates),
            result_type=list[ModelRef],
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=retry,
        )
        champion = refs[0]
        metrics: dict[str, dict[str, float]] = {c.kind: c.metrics for c in candidates}
        beaten = metrics.get("xgboost", {}).get("skill_vs_persistence", 0.0)
        decision = (
            f"champion is {champion.flavor} v{champion.version}: xgboost skill vs persistence "
            f"{beaten:+.4f} on {int(metrics['xgboost']['n_test'])} held-out rows"
        )
        workflow.logger.info(decision)
        return TrainingResult(
            champion=champion, registered=refs, decision=decision, dataset=dataset, metrics=metrics
        )
