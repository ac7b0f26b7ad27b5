"""Agent candles -> technical_indicators: O(1) incremental indicators per (market, interval).

State lives in the `indicator_state` table (changelogged, JSON). The code is the one training uses
(`cryptopredict.features.indicators`), so live and historical values are the same numbers.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from cryptopredict import metrics
from cryptopredict.features.indicators import IndicatorState
from cryptopredict.models import Candle
from streams.app import app, candles_topic, dead_letter, indicators_topic, state_table
from streams.guard import complete_stream

logger = logging.getLogger(__name__)

indicator_state = state_table("indicator_state")
_complete_candles = complete_stream("indicator_agent", candles_topic.get_topic_name())


@app.agent(candles_topic)
async def compute_indicators(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        await _complete_candles.check(event.message)
        with _complete_candles.processing():
            await _on_candle(event.value)


async def _on_candle(raw: bytes) -> None:
    try:
        candle = Candle.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter("indicator_agent", raw, f"invalid candle: {exc.errors()[0]['msg']}")
        return
    key = f"{candle.market}|{candle.interval_s}"
    stored = indicator_state.get(key)
    state = (
        IndicatorState.new(candle.market, candle.interval_s)
        if stored is None
        else IndicatorState.model_validate(stored)
    )
    started = time.perf_counter()
    try:
        row = state.update(candle)
    except ValueError as exc:  # a candle seen before (redelivery after a restart): already counted
        logger.info("indicator update skipped for %s: %s", key, exc)
        return
    metrics.INDICATOR_LATENCY.labels(str(candle.interval_s)).observe(time.perf_counter() - started)
    # The row first, acknowledged by the broker, then the state: a kill in between re-sends the same
    # row after the restart instead of losing it (as the candle builder does).
    await (await indicators_topic.send(key=candle.market.encode(), value=row.to_json_bytes()))
    indicator_state[key] = state.model_dump(mode="json")
