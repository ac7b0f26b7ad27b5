"""RetentionWorkflow: prunes what has aged out, on a schedule (`retention.every_s`, created or updated at
worker start with the ages of the settings) or by hand. One step per kind, in this order, each skipped when
its age is 0: predictions and dead letters (feature store rows, in batches), late trades (the Kafka
topic's retention), finished Optuna studies, old MLflow model versions. The cutoffs come from the
workflow's clock, so a retried step deletes by the same line; the counts are the result and the run's
details.

    temporal workflow start --type RetentionWorkflow --task-queue training --workflow-id retention-manual \
        --input '{"ages": {"predictions_days": 180, "dead_letters_days": 30, "late_trades_days": 7,
                  "optuna_studies_days": 30, "mlflow_versions_days": 90}}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.retention import RetentionActivities
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
    from cryptopredict.models.retention import (
        PruneCount,
        PruneKind,
        PruneRequest,
        RetentionInput,
        RetentionReport,
    )

# Sync and async activity methods side by side: `Any`, as execute_activity_method's overloads take either.
STEPS: tuple[tuple[PruneKind, Any], ...] = (
    ("predictions", RetentionActivities.prune_predictions),
    ("dead_letters", RetentionActivities.prune_dead_letters),
    ("late_trades", RetentionActivities.set_late_trades_retention),
    ("optuna_studies", RetentionActivities.prune_optuna_studies),
    ("mlflow_versions", RetentionActivities.prune_model_versions),
)


@workflow.defn(name=workflow_types.RETENTION)
class RetentionWorkflow:
    @workflow.run
    async def run(self, request: RetentionInput) -> RetentionReport:
        now = workflow.now()
        counts = []
        for kind, step in STEPS:
            days = request.ages.days(kind)
            if days <= 0:
                counts.append(PruneCount(kind=kind, detail="off"))
                continue
            prune = PruneRequest(
                kind=kind,
                cutoff=now - timedelta(days=days),
                age_days=days,
                scope=request.scope,
                batch_rows=request.batch_rows,
            )
            counts.append(await workflow.execute_activity_method(step, prune, **policies.RETENTION_PRUNE()))
        report = RetentionReport(counts=counts)
        workflow.set_current_details(report.summary())
        workflow.logger.info("retention %s", report.summary())
        return report
