"""Drift activities: thin adapters from the DriftMonitorWorkflow to its steps in cryptopredict.drift_monitor
(the registry, the feature store, the outcome ledger, Temporal and Kafka); what to compare is decided by
cryptopredict.ml.drift_check, the arithmetic is cryptopredict.ml.drift.

- compute_drift: the report of the champion's training window against the recent window.
- start_drift_retrain: the target's TrainingWorkflow with the breaches as its reason (started, attached
  to the one running, or skipped within the cooldown).
- record_drift_report: the report as a row of `drift_reports` and a record on the topic.
"""

from __future__ import annotations

import logging

from temporalio import activity

from activities.heartbeat import heartbeating
from cryptopredict import drift_monitor
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftRecord,
    DriftReport,
    RecordInput,
    RetrainOutcome,
    RetrainRequest,
)
from cryptopredict.settings import Settings
from cryptopredict.topic_writer import TopicWriter

logger = logging.getLogger(__name__)


class DriftActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._topics = TopicWriter(settings.kafka)

    @activity.defn(name="compute_drift")
    def compute_drift(self, request: DriftMonitorInput) -> DriftReport:
        """Sync (on the worker's executor), heartbeating while it reads and computes."""
        with heartbeating() as progress:
            report = drift_monitor.check_drift(self.settings, request, progress)
        logger.info("drift %s", report.summary())
        return report

    @activity.defn(name="start_drift_retrain")
    async def start_drift_retrain(self, request: RetrainRequest) -> RetrainOutcome:
        """Safe to retry: a retrain this breach started is recognised by its memo."""
        outcome = await drift_monitor.start_retrain(self.settings, activity.client(), request)
        logger.info(
            "%s: drift retrain %s %s: %s",
            request.report.target.model_name,
            outcome.action,
            outcome.run_id,
            outcome.detail,
        )
        return outcome

    @activity.defn(name="record_drift_report")
    async def record_drift_report(self, request: RecordInput) -> None:
        """Idempotent: the row's key is the monitor's run."""
        record = DriftRecord.of(request.report, request.workflow_id, request.run_id)
        await drift_monitor.record_report(self.settings, record, self._topics)
