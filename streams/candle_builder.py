"""Agent trades -> candles: event-time tumbling windows per (market, interval); only closed candles go out.
A market is a pair on one venue, keyed as topics.market_key names it (the pair itself on Kraken).

State per (market, interval) lives in the `candle_state` table (changelogged, JSON) so a restarted worker
resumes where it stopped. An idle timer sends ticks through Kafka, so idle windows are closed inside
the agent, where table writes are allowed and ordered with the trades of the same partition. Trades
whose window has closed go to `late_trades`.

Exactly once in substance, under kill -9, broker restarts and partition hand-overs: for each record the
agent first sends what it closed (candles, late trades), and only once the broker has it writes the new
state and acknowledges the record (streams.settling: meanwhile the agent goes on with other markets'
records); Faust flushes the state's changelog before it commits the record's offset. So the
restored state is never behind the committed offset. It may be ahead: the replayed trades are then
recognised by trade_id and dropped, and a candle sent again carries the same values (the store upserts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime

from faust.types import TP
from pydantic import ValidationError

from cryptopredict import metrics
from cryptopredict.features.candles import CandleState
from cryptopredict.models import Candle, Trade, TradeBatch
from cryptopredict.topics import TRADES, topic_name
from streams import faust_internals
from streams.app import (
    app,
    candle_input,
    candle_listeners,
    candle_ticks_topic,
    candles_topic,
    dead_letter,
    late_trades_topic,
    settings,
    state_table,
)
from streams.guard import complete_stream
from streams.settling import Output, Settling

logger = logging.getLogger(__name__)

INTERVALS = sorted(set(settings.features.candle_intervals_s))
trades_topic_name = topic_name(TRADES, settings.kafka.topic_prefix)

candle_state = state_table("candle_state")


def state_key(market: str, interval_s: int) -> str:
    return f"{market}|{interval_s}"


# Parsed states by key, with the table value they were parsed from: while the table still holds that very
# object, nothing else changed it (recovery after a rebalance puts new objects in), so parsing is skipped.
_parsed: dict[str, tuple[object, CandleState]] = {}
# When each market's last trade record arrived (monotonic clock); a market absent here arrived "now".
_last_arrival: dict[str, float] = {}


def _state_for(market: str, interval_s: int) -> CandleState:
    key = state_key(market, interval_s)
    stored = candle_state.get(key)
    cached = _parsed.get(key)
    if cached is not None and cached[0] is stored:
        return cached[1]
    if stored is None:
        return CandleState(pair=market, interval_s=interval_s, grace_s=settings.features.grace_s)
    return CandleState.model_validate(stored)


def _save(state: CandleState) -> None:
    key = state_key(state.pair, state.interval_s)
    value = state.model_dump(mode="json")
    candle_state[key] = value
    _parsed[key] = (value, state)


async def _deliver(
    market: str, states: list[CandleState], closed: list[Candle], late: dict[int, tuple[Trade, list[int]]]
) -> Output:
    """Sends the closed candles and the late trades (with the intervals they missed); returns them with
    the states to save once the broker has all of them."""
    pending: list[Awaitable[object]] = []
    for candle in closed:
        pending.append(await candles_topic.send(key=candle.market.encode(), value=candle.to_json_bytes()))
        for listener in candle_listeners:
            try:
                listener(candle)
            except Exception:  # a listener only saves time: the candle goes on through Kafka regardless
                logger.exception("candle listener %s failed", listener)
    for trade, intervals in late.values():
        reason = f"late trade: its window is already closed at interval(s) {intervals} s"
        raw = trade.model_dump_json().encode()
        pending.append(await dead_letter("candle_builder", raw, reason, topic=late_trades_topic))

    def save() -> None:
        published_at = datetime.now(UTC)
        for candle in closed:
            interval = str(candle.interval_s)
            metrics.CANDLES_CLOSED.labels(candle.market, interval).inc()
            metrics.CANDLE_CLOSE_DELAY.labels(interval).observe(
                (published_at - candle.window_end).total_seconds()
            )
        for state in states:
            _save(state)

    return Output(market, pending, save)


async def _on_trades(raw: bytes, settling: Settling) -> Output | None:
    try:
        batch = TradeBatch.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter("candle_builder", raw, f"invalid trade batch: {exc.errors()[0]['msg']}")
        return None
    _last_arrival[batch.market] = time.monotonic()
    await settling.ready(batch.market)
    states = [_state_for(batch.market, interval_s) for interval_s in INTERVALS]
    closed: list[Candle] = []
    late: dict[int, tuple[Trade, list[int]]] = {}
    duplicates = 0
    for trade in batch.trades:
        for state in states:
            candles, outcome = state.add_trade(trade)
            closed += candles
            if outcome == "late":  # late for a short interval can still be in time for a longer one
                late.setdefault(trade.trade_id, (trade, []))[1].append(state.interval_s)
            duplicates += outcome == "duplicate"
    if duplicates:
        logger.info(
            "dropped %d repeated trade updates of %s (a replay after a restart)", duplicates, batch.market
        )
    return await _deliver(batch.market, states, closed, late)


def _trades_backlog(partition: int) -> bool:
    """True while trades of this partition wait to be read (or that is not known yet, just after a start):
    then a quiet window is not idle, its trades are still queued, and closing it would cut it."""
    tp = TP(trades_topic_name, partition)
    read = faust_internals.read_offset(app.consumer, tp)
    highwater = app.consumer.highwater(tp)
    return highwater is None or (highwater > 0 and (read is None or read + 1 < highwater))


async def _on_tick(market: str, partition: int, settling: Settling) -> Output | None:
    quiet_s = time.monotonic() - _last_arrival.setdefault(market, time.monotonic())
    if quiet_s < settings.features.idle_close_s or _trades_backlog(partition):
        return None
    await settling.ready(market)
    states = [_state_for(market, interval_s) for interval_s in INTERVALS]
    closed = [candle for state in states for candle in state.close_idle(datetime.now(UTC))]
    return await _deliver(market, states, closed, {}) if closed else None


_complete_trades = complete_stream("candle_builder", trades_topic_name)


@app.agent(candle_input)
async def build_candles(stream):  # type: ignore[no-untyped-def]
    records = stream.noack()  # acknowledged by `settling`, once what they closed is out and the state saved
    settling = Settling("candle_builder", records)
    async for event in records.events():
        if event.message.topic == candle_ticks_topic.get_topic_name():
            output = await _on_tick(event.key.decode(), event.message.partition, settling)
        else:
            await _complete_trades.check(event.message)
            with _complete_trades.processing():
                output = await _on_trades(event.value, settling)
        await settling.settle(event, output)


@app.timer(interval=settings.features.idle_check_s)
async def tick_idle_windows() -> None:
    markets = {key.split("|", 1)[0] for key in list(candle_state.keys())}
    for market in markets:
        await candle_ticks_topic.send(key=market.encode(), value=b"{}")
