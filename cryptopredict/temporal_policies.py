"""How long every activity may run, how it is retried, and the errors a retry cannot fix: one place.

Temporal matches non-retryable errors by type name; an exception of these classes raised in an activity
reaches the workflow as an ApplicationError whose type is the class name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy


class CryptopredictError(Exception):
    """The root of the errors the project raises on purpose."""


class NotEnoughData(CryptopredictError):
    """Too few usable rows to train or evaluate: no person need act, a later run with more data may
    succeed, but retrying this one will not."""


class SentimentOutputInvalid(CryptopredictError):
    """The model gave no valid headline sentiment within its output retries (or hit the token limit), or
    the server refused the request: deterministic for a headline, model and prompt, so not retried."""


# Configuration and data errors need a person or more data; retrying only delays the failure.
NOT_RETRYABLE = [ValueError.__name__, KeyError.__name__, NotEnoughData.__name__]

# A step of a retrain or of a drift check: a worker that died is replaced, a bad input is not retried,
# and the attempts span about a minute, so a store or registry restarting (30 s in the drills) is outlasted.
STEP = RetryPolicy(
    maximum_attempts=6,
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NOT_RETRYABLE,
)
# Starting a scheduled retrain: only Temporal itself can fail it, briefly.
START_RETRAIN = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2))
# One poll of the news sources: the next scheduled poll comes anyway.
NEWS_POLL = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=5
)
# Scoring one news item: no attempt limit, so with the model server down the item waits until it is back.
SENTIMENT_SCORE = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    non_retryable_error_types=[SentimentOutputInvalid.__name__],
)
# A batch of backfill pages: the exchange's rate limits and outages pass.
BACKFILL_PAGES = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@dataclass(frozen=True)
class ActivityOptions:
    """One activity's start-to-close timeout, retry policy and heartbeat timeout, as the keyword
    arguments of `workflow.execute_activity_method`."""

    timeout: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None

    def __call__(self, heartbeat: timedelta | None = None) -> dict[str, Any]:
        """`heartbeat` overrides the default, as a retrain's request may."""
        return {
            "start_to_close_timeout": self.timeout,
            "retry_policy": self.retry,
            "heartbeat_timeout": heartbeat or self.heartbeat,
        }


def _minutes(
    minutes: float, retry: RetryPolicy = STEP, heartbeat: timedelta | None = None
) -> ActivityOptions:
    return ActivityOptions(timedelta(minutes=minutes), retry, heartbeat)


# The steps of a retrain (the request gives their heartbeat timeout). Tuning batches and the price
# evaluation fit XGBoost on up to a year of minutes; the rest read or write a few rows.
RETRAIN_DATASET = _minutes(20)
RETRAIN_CHAMPION = _minutes(5)
RETRAIN_SCREEN = _minutes(60)
RETRAIN_TUNE_BATCH = _minutes(120)
RETRAIN_BEST_TRIAL = _minutes(5)
RETRAIN_EVALUATE_PRICE = _minutes(60)
RETRAIN_EVALUATE_VOLATILITY = _minutes(30)
RETRAIN_REGISTER = _minutes(5)
RETRAIN_PROMOTE = _minutes(5)
START_SCHEDULED_RETRAIN = _minutes(1, START_RETRAIN)
COMPUTE_DRIFT = _minutes(20, heartbeat=timedelta(minutes=2))
START_DRIFT_RETRAIN = _minutes(2)
RECORD_DRIFT = _minutes(2)
INGEST_NEWS = _minutes(5, NEWS_POLL)
SCORE_NEWS = _minutes(3, SENTIMENT_SCORE)
# One prune step: batches of deletes, heartbeating between them.
RETENTION_PRUNE = _minutes(60, heartbeat=timedelta(minutes=2))
# The exchange's pages arrive in seconds; a batch heartbeats per page.
BACKFILL_BATCH = _minutes(30, BACKFILL_PAGES, heartbeat=timedelta(seconds=10))
