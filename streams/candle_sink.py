"""Agent candles -> feature store: micro-batched idempotent upserts (replays never duplicate rows)."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from cryptopredict.models import Candle
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from streams.app import app, candles_topic, dead_letter, settings

logger = logging.getLogger(__name__)


@app.agent(candles_topic)
async def sink_candles(stream):  # type: ignore[no-untyped-def]
    await asyncio.to_thread(migrate, settings.postgres)
    engine = async_engine(settings.postgres)
    async for values in stream.take(200, within=1.0):
        rows = []
        for raw in values:
            try:
                rows.append(Candle.model_validate_json(raw))
            except ValidationError as exc:
                await dead_letter("candle_sink", raw, f"invalid candle: {exc.errors()[0]['msg']}")
        written = await upsert_candles(engine, rows)
        logger.info("upserted %d candles", written)
