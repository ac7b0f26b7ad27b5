"""Agents that write the streams into the feature store: candles, indicator rows, predictions and dead
letters.

Micro-batches (`stream.take`) with idempotent upserts keyed by (pair, interval_s, window_start), so
replays and restarts never duplicate rows. The schema is brought up to date by the migrations first.
Off when `store.sink_enabled` is false (RisingWave ingests the topics itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict.models import Candle, DeadLetter, IndicatorRow, Prediction
from cryptopredict.store.candles import (
    async_engine,
    insert_dead_letters,
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

# `within` bounds how long a closed candle waits for its micro-batch: it is most of the close-to-store delay.
BATCH, WITHIN_S = 500, 0.05

_engine: AsyncEngine | None = None
_engine_lock = asyncio.Lock()


async def _store() -> AsyncEngine:
    """One engine per worker, created after the migrations ran."""
    global _engine
    async with _engine_lock:
        if _engine is None:
            await asyncio.to_thread(migrate, settings.postgres)
            _engine = async_engine(settings.postgres)
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
            rows = []
            for event in events:
                try:
                    rows.append(model.model_validate_json(event.value))
                except ValidationError as exc:
                    reason = f"invalid {model.__name__}: {exc.errors()[0]['msg']}"
                    await dead_letter(source, event.value, reason)
            if rows:
                await write(await _store(), rows)
                logger.debug("%s wrote %d rows", source, len(rows))


if settings.store.sink_enabled:
    _complete_candles = complete_stream("candle_sink", candles_topic.get_topic_name())
    _complete_indicators = complete_stream("indicator_sink", indicators_topic.get_topic_name())
    _complete_predictions = complete_stream("prediction_sink", predictions_topic.get_topic_name())

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
        async for values in stream.take(BATCH, within=WITHIN_S):
            letters = []
            for raw in values:
                try:
                    letters.append(DeadLetter.model_validate_json(raw))
                except ValidationError:  # re-queuing it as a dead letter would loop forever
                    logger.error("unreadable dead letter skipped: %r", raw[:200])
            if letters:
                await insert_dead_letters(await _store(), letters)
