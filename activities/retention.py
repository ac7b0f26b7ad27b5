"""Retention activities: thin adapters from the RetentionWorkflow to the prune steps of
cryptopredict.retention, which decides what goes. Each step is safe to retry: it deletes by the cutoff
fixed in the workflow's history, and what a first attempt deleted is simply not found again.

- prune_predictions, prune_dead_letters: rows of the feature store, in batches (sync, on the executor).
- set_late_trades_retention: retention.ms of topic `late_trades`, where late trades live.
- prune_optuna_studies: finished studies of retrains that no longer run.
- prune_model_versions: old registry versions, never an aliased one or the previous champion (sync).
"""

from __future__ import annotations

import logging

from temporalio import activity

from activities.heartbeat import heartbeating
from cryptopredict import retention
from cryptopredict.models.retention import PruneCount, PruneRequest
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)


def _logged(count: PruneCount) -> PruneCount:
    logger.info("retention %s", count.summary())
    return count


class RetentionActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="prune_predictions")
    def prune_predictions(self, request: PruneRequest) -> PruneCount:
        with heartbeating() as progress:
            return _logged(retention.prune_predictions(self.settings, request, progress))

    @activity.defn(name="prune_dead_letters")
    def prune_dead_letters(self, request: PruneRequest) -> PruneCount:
        with heartbeating() as progress:
            return _logged(retention.prune_dead_letters(self.settings, request, progress))

    @activity.defn(name="set_late_trades_retention")
    async def set_late_trades_retention(self, request: PruneRequest) -> PruneCount:
        return _logged(await retention.set_late_trades_retention(self.settings, request))

    @activity.defn(name="prune_optuna_studies")
    async def prune_optuna_studies(self, request: PruneRequest) -> PruneCount:
        return _logged(
            await retention.prune_studies(self.settings, activity.client(), request, activity.heartbeat)
        )

    @activity.defn(name="prune_model_versions")
    def prune_model_versions(self, request: PruneRequest) -> PruneCount:
        with heartbeating() as progress:
            return _logged(retention.prune_model_versions(self.settings, request, progress))
