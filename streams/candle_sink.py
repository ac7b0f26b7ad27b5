"""Agent candles -> feature store: micro-batched idempotent upserts (replays never duplicate rows)."""

from __future__ import annotations

import logging

from cryptopredict.models import Candle
from cryptopredict.store.candles import async_engine, create_tables, upsert_candles
from streams.app import app, candles_topic, settings

logger = logging.getLogger(__name__)


@app.agent(candles_topic)
async def sink_candles(stream):  # type: ignore[no-untyped-def]
    engine = async_engine(settings.postgres)
    await create_tables(engine)
    async for values in stream.take(200, within=1.0):
        written = await upsert_candles(engine, [Candle.model_validate_json(v) for v in values])
        logger.info("upserted %d candles", written)
