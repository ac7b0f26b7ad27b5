"""Worker interceptor counting workflow starts by type on the SDK's metric meter (the SDK itself counts
completions and failures: temporal_workflow_completed / temporal_workflow_failed)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

# Kept here rather than imported from cryptopredict.metrics: this module is loaded inside the workflow
# sandbox, which should not import prometheus_client.
WORKFLOW_STARTS = "cryptopredict_workflow_starts_total"


class _CountStarts(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        # The workflow meter records nothing while replaying, so a start counts once however often the
        # history is replayed.
        workflow.metric_meter().create_counter(WORKFLOW_STARTS, "Workflow executions started").add(
            1, {"workflow_type": workflow.info().workflow_type}
        )
        return await super().execute_workflow(input)


class WorkflowMetrics(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _CountStarts
