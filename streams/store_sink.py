"""Agents that write the streams into the feature store: candles, indicator rows, predictions and dead
letters.

Micro-batches (`stream.take_events`) with idempotent upserts keyed by (exchange, pair, interval_s, window_start),
and dead letters by their content key, so replays and restarts never duplicate rows. The schema is
brought up to date by the migrations first. Off when `store.sink_enabled` is false (RisingWave ingests
the topics itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict import metrics
from cryptopredict.models import Candle, DeadLetter, IndicatorRow, Prediction
from cryptopredict.store.candles import (
    async_engine,
    insert_dead_letters,
    store_unreachable,
    upsert_candles,
    upsert_indicators,
    upsert_predictions,
)
from cryptopredict.store.migrate import migrate
from streams.app import (
    app,
    candles_topic,
    dead_letter,
    dead_letters_topic,
    indicators_topic,
    predictions_topic,
    settings,
)
from streams.guard import CompleteStream, complete_stream

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Waiting for a store that is away: first retry, then doubling up to the longest pause.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0

# `within` bounds how long a closed candle waits for its micro-batch: it is most of the close-to-store delay.
BATCH, WITHIN_S = 500, 0.02

_engine: AsyncEngine | None = None
_engine_lock = asyncio.Lock()


async def _store() -> AsyncEngine:
    """One engine per worker, created after the migrations ran."""
    global _engine
    async with _engine_lock:
        if _engine is None:
            await asyncio.to_thread(migrate, settings.postgres)
            # No round trip before each micro-batch: a connection the store dropped fails one write,
            # which `_write_when_stored` retries on a new one.
            _engine = async_engine(settings.postgres, pre_ping=False)
    return _engine


async def _sink(
    stream: Any,
    complete: CompleteStream,
    model: type[M],
    write: Callable[[AsyncEngine, Sequence[M]], Any],
) -> None:
    """Writes every record of the topic (a row Faust skipped would be missing from the store for good)."""
    source = complete.agent
    async for events in stream.take_events(BATCH, within=WITHIN_S):
        for event in events:
            await complete.check(event.message)
        with complete.processing():
            rows: list[Any] = []
            for event in events:
                try:
                    rows.append(model.model_validate_json(event.value))
                except ValidationError as exc:
                    reason = f"invalid {model.__name__}: {exc.errors()[0]['msg']}"
                    if model is DeadLetter:
                        rows.append(_unreadable_letter(source, event, reason))
                    else:
                        await dead_letter(source, event.value, reason)
            if rows:
                await _write_when_stored(source, write, rows)
                logger.debug("%s wrote %d rows", source, len(rows))


async def _write_when_stored(
    source: str, write: Callable[[AsyncEngine, Sequence[M]], Any], rows: Sequence[M]
) -> None:
    """Writes `rows`, waiting for a store that is away. Raising instead would end the agent, and Faust
    acknowledges the records a crashed agent had taken: they would be missing from the store for good."""
    delay = RETRY_FIRST_S
    while True:
        try:
            await write(await _store(), rows)
            return
        except Exception as exc:
            if not store_unreachable(exc):
                raise
            metrics.STORE_WRITE_RETRIES.labels(source).inc()
            logger.warning("%s: the store is unreachable (%s); retrying in %.1f s", source, exc, delay)
        await asyncio.sleep(delay)
        delay = min(2 * delay, RETRY_MAX_S)


def _unreadable_letter(source: str, event: Any, reason: str) -> DeadLetter:
    """A record of the dead-letter topic that is no dead letter is stored as one of its own, not sent
    back to the topic (that would loop). Its time is the record's, so reading it again gives the same
    letter (`DeadLetter.store_key`)."""
    logger.error("%s: %s", source, reason)
    metrics.DEAD_LETTERS.labels(source, metrics.reason_kind(reason)).inc()
    message = event.message
    # The record's position tells two identical records apart, and is the same when it is read again.
    reason = f"{reason} (partition {message.partition}, offset {message.offset})"
    at = datetime.fromtimestamp(message.timestamp, UTC)
    raw = (event.value or b"").decode("utf-8", "replace")
    return DeadLetter(source=source, reason=reason, raw=raw, at=at)


if settings.store.sink_enabled:
    _complete_candles = complete_stream("candle_sink", candles_topic.get_topic_name())
    _complete_indicators = complete_stream("indicator_sink", indicators_topic.get_topic_name())
    _complete_predictions = complete_stream("prediction_sink", predictions_topic.get_topic_name())
    _complete_dead_letters = complete_stream("dead_letter_sink", dead_letters_topic.get_topic_name())

    @app.agent(candles_topic)
    async def sink_candles(stream):  # type: ignore[no-untyped-def]
        await _sink(stream, _complete_candles, Candle, upsert_candles)

    @app.agent(indicators_topic)
    async def sink_indicators(stream):  # type: ignore[no-untyped-def]
        await _sink(stream, _complete_indicators, IndicatorRow, upsert_indicators)

    @app.agent(predictions_topic)
    async def sink_predictions(stream):  # type: ignore[no-untyped-def]
        await _sink(stream, _complete_predictions, Prediction, upsert_predictions)

    @app.agent(dead_letters_topic)
    async def sink_dead_letters(stream):  # type: ignore[no-untyped-def]
        await _sink(stream, _complete_dead_letters, DeadLetter, insert_dead_letters)
