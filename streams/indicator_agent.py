"""Agent candles -> technical_indicators: O(1) incremental indicators per (pair, interval).

State lives in the `indicator_state` table (changelogged, JSON). The code is the one training uses
(`cryptopredict.features.indicators`), so live and historical values are the same numbers.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from cryptopredict.features.indicators import IndicatorState
from cryptopredict.models import Candle
from streams.app import app, candles_topic, dead_letter, indicators_topic, settings

logger = logging.getLogger(__name__)

indicator_state = app.Table("indicator_state", default=None, partitions=settings.kafka.partitions)


@app.agent(candles_topic)
async def compute_indicators(stream):  # type: ignore[no-untyped-def]
    async for raw in stream:
        try:
            candle = Candle.model_validate_json(raw)
        except ValidationError as exc:
            await dead_letter("indicator_agent", raw, f"invalid candle: {exc.errors()[0]['msg']}")
            continue
        key = f"{candle.pair}|{candle.interval_s}"
        stored = indicator_state.get(key)
        state = (
            IndicatorState.new(candle.pair, candle.interval_s)
            if stored is None
            else IndicatorState.model_validate(stored)
        )
        try:
            row = state.update(candle)
        except ValueError as exc:  # a candle seen before (redelivery after a restart): already counted
            logger.info("indicator update skipped for %s: %s", key, exc)
            continue
        # The row first, acknowledged by the broker, then the state: a kill in between re-sends the same
        # row after the restart instead of losing it (as the candle builder does).
        await (await indicators_topic.send(key=candle.pair.encode(), value=row.to_json_bytes()))
        indicator_state[key] = state.model_dump(mode="json")
