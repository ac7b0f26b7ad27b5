"""DriftMonitorWorkflow: has the champion's world moved? On a schedule per (pair, interval, horizon)
(`drift.every_s`), or by hand (`cryptopredict drift`):

1. compute_drift: PSI of every model input (sentiment included) between the champion's training window
   and the recent window, and the champion's live skill vs persistence from the outcome ledger.
2. On a breach, start_drift_retrain: the target's TrainingWorkflow with the breaches as its `reason`.
3. record_drift_report: the report in table and topic `drift_reports`.

The report is the result, its one-line summary the run's current details and memo, so the Temporal UI
says why a retrain happened on both sides: here, and in the TrainingWorkflow's input, memo and summary.

Why an activity starts the retrain, not a child workflow: the retrain must be the target's one
TrainingWorkflow, whoever starts it (this monitor, another monitor run, the schedule, a person). Under
its well-known id the server itself refuses a second run while one is running, so a breach attaches
instead of doubling a retrain; a child workflow cannot attach to a run it did not start (its start just
fails), and its life would be bound to this short run's. The activity's result (started / attached /
skipped, with the run id) is in this history, and a retry of it is recognised by the memo it leaves on
the retrain: a breach starts at most one retrain.

    temporal workflow start --type DriftMonitorWorkflow --task-queue training \
        --workflow-id drift-BTCUSD-60s-h1 --input '{"pair": "BTC/USD", "interval_s": 60}'
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.drift import DriftActivities
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
    from cryptopredict.models.drift import (
        DriftMonitorInput,
        DriftReport,
        RecordInput,
        RetrainRequest,
    )


@workflow.defn(name=workflow_types.DRIFT_MONITOR)
class DriftMonitorWorkflow:
    @workflow.run
    async def run(self, request: DriftMonitorInput) -> DriftReport:
        info = workflow.info()
        report = await workflow.execute_activity_method(
            DriftActivities.compute_drift,
            request,
            **policies.COMPUTE_DRIFT(),
        )
        if report.breaches and request.retrain:
            outcome = await workflow.execute_activity_method(
                DriftActivities.start_drift_retrain,
                RetrainRequest(
                    report=report,
                    monitor=request,
                    triggered_by=f"{info.workflow_id}/{info.run_id}",
                    task_queue=request.training_task_queue or info.task_queue,
                ),
                **policies.START_DRIFT_RETRAIN(),
            )
            report = report.model_copy(update={"retrain": outcome})
        workflow.upsert_memo(
            {
                "breached": report.breached,
                "breaches": report.breaches,
                "retrain": None if report.retrain is None else report.retrain.model_dump(),
            }
        )
        workflow.set_current_details(report.summary())
        workflow.logger.info("drift %s", report.summary())
        await workflow.execute_activity_method(
            DriftActivities.record_drift_report,
            RecordInput(report=report, workflow_id=info.workflow_id, run_id=info.run_id),
            **policies.RECORD_DRIFT(),
        )
        return report
