"""Agent trades -> candles: event-time tumbling windows per (pair, interval); only closed candles go out.

State per (pair, interval) lives in the `candle_state` table (changelogged, JSON) so a restarted worker
resumes where it stopped. An idle timer sends ticks through Kafka, so idle windows are closed inside
the agent, where table writes are allowed and ordered with the trades of the same partition. Trades
whose window has closed go to `late_trades`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from faust.types import TP
from pydantic import ValidationError

from cryptopredict.features.candles import CandleState
from cryptopredict.models import Candle, Trade
from cryptopredict.topics import TRADES, topic_name
from streams.app import (
    app,
    candle_input,
    candle_ticks_topic,
    candles_topic,
    dead_letter,
    late_trades_topic,
    settings,
)

logger = logging.getLogger(__name__)

INTERVALS = sorted(set(settings.features.candle_intervals_s))
trades_topic_name = topic_name(TRADES, settings.kafka.topic_prefix)

candle_state = app.Table("candle_state", default=None, partitions=settings.kafka.partitions)


def state_key(pair: str, interval_s: int) -> str:
    return f"{pair}|{interval_s}"


# Parsed states by key, with the table value they were parsed from: while the table still holds that very
# object, nothing else changed it (recovery after a rebalance puts new objects in), so parsing is skipped.
_parsed: dict[str, tuple[object, CandleState]] = {}


def _state_for(pair: str, interval_s: int) -> CandleState:
    key = state_key(pair, interval_s)
    stored = candle_state.get(key)
    cached = _parsed.get(key)
    if cached is not None and cached[0] is stored:
        return cached[1]
    if stored is None:
        return CandleState(pair=pair, interval_s=interval_s, grace_s=settings.features.grace_s)
    return CandleState.model_validate(stored)


def _save(state: CandleState) -> None:
    key = state_key(state.pair, state.interval_s)
    value = state.model_dump(mode="json")
    candle_state[key] = value
    _parsed[key] = (value, state)


async def _emit(candles: list[Candle]) -> None:
    for candle in candles:
        await candles_topic.send(key=candle.pair.encode(), value=candle.to_json_bytes())


async def _on_trade(raw: bytes) -> None:
    try:
        trade = Trade.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter("candle_builder", raw, f"invalid trade: {exc.errors()[0]['msg']}")
        return
    for interval_s in INTERVALS:
        state = _state_for(trade.pair, interval_s)
        closed, outcome = state.add_trade(trade)
        if outcome == "late":
            reason = f"late trade: its {interval_s}s window is already closed"
            await dead_letter("candle_builder", raw, reason, topic=late_trades_topic)
        elif outcome == "duplicate":
            logger.info("dropped repeated trade %s %d", trade.pair, trade.trade_id)
        else:
            _save(state)
            await _emit(closed)


def _trades_backlog(partition: int) -> bool:
    """True while trades of this partition wait to be read, e.g. after a restart: then a quiet
    window is not idle, its trades are still queued, and closing it on the wall clock would cut it."""
    tp = TP(trades_topic_name, partition)
    read = app.consumer._read_offset.get(tp)  # the consumer's own bookkeeping: last offset handed out
    highwater = app.consumer.highwater(tp)
    return highwater is not None and (read is None or read + 1 < highwater)


async def _on_tick(pair: str, partition: int) -> None:
    if _trades_backlog(partition):
        return
    for interval_s in INTERVALS:
        state = _state_for(pair, interval_s)
        closed = state.close_idle(datetime.now(UTC))
        if closed:
            _save(state)
            await _emit(closed)


@app.agent(candle_input)
async def build_candles(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        if event.message.topic == candle_ticks_topic.get_topic_name():
            await _on_tick(event.key.decode(), event.message.partition)
        else:
            await _on_trade(event.value)


@app.timer(interval=settings.features.idle_check_s)
async def tick_idle_windows() -> None:
    pairs = {key.split("|", 1)[0] for key in list(candle_state.keys())}
    for pair in pairs:
        await candle_ticks_topic.send(key=pair.encode(), value=b"{}")
