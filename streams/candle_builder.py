"""Agent trades -> candles: event-time tumbling windows per (pair, interval); only closed candles go out.

State per (pair, interval) lives in the `candle_state` table (changelogged, JSON) so a restarted worker
resumes where it stopped. An idle timer sends ticks through Kafka, so idle windows are closed inside
the agent, where table writes are allowed and ordered with the trades of the same partition. Trades
whose window has closed go to `late_trades`.
"""

from __future__ import annotations

import logging
import weakref
from datetime import UTC, datetime

from faust.streams import _current_event
from faust.types import TP, EventT
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
# Micro-batches: table writes (and their changelog records) once per key and batch.
BATCH_SIZE, BATCH_WITHIN_S = 1000, 0.05
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


class Batch:
    """States touched by one micro-batch of events, written back to the table once per key at the end
    (one changelog record per key and batch instead of one per trade and interval)."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[CandleState, EventT]] = {}

    def state(self, pair: str, interval_s: int) -> CandleState:
        touched = self.states.get(state_key(pair, interval_s))
        return touched[0] if touched is not None else _state_for(pair, interval_s)

    def touch(self, state: CandleState, event: EventT) -> None:
        self.states[state_key(state.pair, state.interval_s)] = (state, event)

    def save(self) -> None:
        for state, event in self.states.values():
            # The changelog record goes to the partition of the event that changed the state; Faust
            # reads it from the current-event context (not the stream's attribute, which `take` uses).
            token = _current_event.set(weakref.ref(event))
            try:
                _save(state)
            finally:
                _current_event.reset(token)


async def _on_trade(batch: Batch, event: EventT) -> None:
    raw: bytes = event.value
    try:
        trade = Trade.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter("candle_builder", raw, f"invalid trade: {exc.errors()[0]['msg']}")
        return
    for interval_s in INTERVALS:
        state = batch.state(trade.pair, interval_s)
        closed, outcome = state.add_trade(trade)
        if outcome == "late":
            reason = f"late trade: its {interval_s}s window is already closed"
            await dead_letter("candle_builder", raw, reason, topic=late_trades_topic)
        elif outcome == "duplicate":
            logger.info("dropped repeated trade %s %d", trade.pair, trade.trade_id)
        else:
            batch.touch(state, event)
            await _emit(closed)


def _trades_backlog(partition: int) -> bool:
    """True while trades of this partition wait to be read, e.g. after a restart: then a quiet
    window is not idle, its trades are still queued, and closing it on the wall clock would cut it."""
    tp = TP(trades_topic_name, partition)
    read = app.consumer._read_offset.get(tp)  # the consumer's own bookkeeping: last offset handed out
    highwater = app.consumer.highwater(tp)
    return highwater is not None and (read is None or read + 1 < highwater)


async def _on_tick(batch: Batch, event: EventT) -> None:
    if _trades_backlog(event.message.partition):
        return
    pair = event.key.decode()
    for interval_s in INTERVALS:
        state = batch.state(pair, interval_s)
        closed = state.close_idle(datetime.now(UTC))
        if closed:
            batch.touch(state, event)
            await _emit(closed)


@app.agent(candle_input)
async def build_candles(stream):  # type: ignore[no-untyped-def]
    ticks = candle_ticks_topic.get_topic_name()
    async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_S):
        batch = Batch()
        tick_events = [e for e in events if e.message.topic == ticks]
        for event in events:
            if event.message.topic != ticks:
                await _on_trade(batch, event)
        for event in tick_events:  # after the batch's trades, so a tick never overtakes them
            await _on_tick(batch, event)
        batch.save()


@app.timer(interval=settings.features.idle_check_s)
async def tick_idle_windows() -> None:
    pairs = {key.split("|", 1)[0] for key in list(candle_state.keys())}
    for pair in pairs:
        await candle_ticks_topic.send(key=pair.encode(), value=b"{}")
