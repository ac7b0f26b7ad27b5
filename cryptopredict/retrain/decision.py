"""Registering a challenger and applying the gate's decision: the same for every target."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptopredict.ml import registry
from cryptopredict.models import ModelEvent, ModelRef
from cryptopredict.models.training import PromoteInput, RegisterInput
from cryptopredict.retrain.runs import RetrainRuns


def registration_tags(request: RegisterInput) -> dict[str, str]:
    """What the registry shows beside a version: its family, dataset, workflow and test figures."""
    evaluation = request.evaluation
    return {
        "kind": evaluation.family,
        "dataset_hash": request.step.dataset.content_hash,
        "workflow_id": request.step.workflow_id,
        **{f"test_{k}": str(v) for k, v in evaluation.metrics.items()},
        "dm_pvalue_vs_persistence": str(evaluation.dm_pvalue_vs_persistence),
    }


def register_challenger(runs: RetrainRuns, request: RegisterInput) -> ModelRef:
    version = registry.register_version(
        runs.mlflow().MlflowClient(),
        request.evaluation.model_uri,
        request.registered_model,
        request.step.mlflow_run_id,
        registration_tags(request),
    )
    return registry.model_ref(version, None)


def apply_decision(runs: RetrainRuns, request: PromoteInput) -> ModelRef:
    """`champion` moves to the challenger, or the challenger keeps the `challenger` alias with the
    reasons and the champion stays; returns the champion after it."""
    client = runs.mlflow().MlflowClient()
    challenger, reasons = request.challenger, request.evaluation.reasons
    if request.evaluation.promote:
        registry.promote(client, challenger.name, challenger.version, "; ".join(reasons))
    else:
        registry.mark_challenger(client, challenger.name, challenger.version, reasons)
    champion = registry.current_champion(client, challenger.name)
    if champion is None:  # ensure_champion runs before any challenger is registered
        raise RuntimeError(f"{challenger.name} has no champion after the decision")
    return registry.model_ref(champion, registry.CHAMPION)


def promotion_event(request: PromoteInput, champion: ModelRef) -> ModelEvent | None:
    """The event serving reloads on, when the challenger was promoted."""
    if not request.evaluation.promote:
        return None
    dataset = request.step.dataset
    return ModelEvent(
        registered_model=champion.name,
        pair=dataset.pair,
        interval_s=dataset.interval_s,
        horizon_candles=dataset.horizon_candles,
        champion=champion,
        kind="promoted",
        reason="; ".join(request.evaluation.reasons),
        at=datetime.now(UTC),
    )
