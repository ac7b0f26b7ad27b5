"""How every activity is retried, and the errors a retry cannot fix: one place for both.

Temporal matches non-retryable errors by type name; an exception of these classes raised in an activity
reaches the workflow as an ApplicationError whose type is the class name.
"""

from __future__ import annotations

from datetime import timedelta

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

# A step of a retrain or of a drift check: a worker that died is replaced, a bad input is not retried.
STEP = RetryPolicy(
    maximum_attempts=3, initial_interval=timedelta(seconds=2), non_retryable_error_types=NOT_RETRYABLE
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
