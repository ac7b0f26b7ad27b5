"""Agent trades -> candles: event-time tumbling windows per pair, only closed candles are emitted.

State per pair lives in the `candle_state` table (changelogged, JSON) so a restarted worker resumes
where it stopped. An idle timer sends ticks through Kafka, so idle windows are closed inside the agent,
where table writes are allowed and ordered with the trades of the same partition.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import ValidationError

from cryptopredict.features.candles import CandleState
from cryptopredict.models import Candle, Trade
from streams.app import (
    app,
    candle_input,
    candle_ticks_topic,
    candles_topic,
    dead_letter,
    settings,
)

logger = logging.getLogger(__name__)

candle_state = app.Table("candle_state", default=None, partitions=settings.kafka.partitions)


def _state_for(pair: str) -> CandleState:
    stored = candle_state.get(pair)
    if stored is None:
        return CandleState(
            pair=pair, interval_s=settings.features.interval_s, grace_s=settings.features.grace_s
        )
    return CandleState.model_validate(stored)


async def _emit(candles: list[Candle]) -> None:
    for candle in candles:
        await candles_topic.send(key=candle.pair.encode(), value=candle.to_json_bytes())


@app.agent(candle_input)
async def build_candles(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        raw: bytes = event.value
        is_tick = event.message.topic == candle_ticks_topic.get_topic_name()
        if is_tick:
            pair = event.key.decode()
            state = _state_for(pair)
            closed = state.close_idle(datetime.now(UTC))
        else:
            try:
                trade = Trade.model_validate_json(raw)
            except ValidationError as exc:
                await dead_letter("candle_builder", raw, f"invalid trade: {exc.errors()[0]['msg']}")
                continue
            state = _state_for(trade.pair)
            closed, outcome = state.add_trade(trade)
            if outcome == "late":
                await dead_letter("candle_builder", raw, "late trade: its window is already closed")
                continue
            if outcome == "duplicate":
                logger.info("dropped repeated trade %s %d", trade.pair, trade.trade_id)
                continue
        if closed or not is_tick:
            candle_state[state.pair] = state.model_dump(mode="json")
        await _emit(closed)


@app.timer(interval=settings.features.idle_check_s)
async def tick_idle_windows() -> None:
    for pair in list(candle_state.keys()):
        await candle_ticks_topic.send(key=pair.encode(), value=b"{}")
