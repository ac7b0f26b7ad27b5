"""Agents that must see every record of their input partitions register a `CompleteStream` here.

Faust 0.15 can drop records it fetched while the worker recovered its tables (see cryptopredict.offsets).
Each guarded agent checks the offsets it receives; a watchdog timer notices records that never arrive.
Either way the worker exits with RESTART_EXIT_CODE and its supervisor (`python -m streams`) starts it
again from the committed offsets, before a later record changed the agent's state.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from faust.types import TP, Message

from cryptopredict.offsets import RESTART_EXIT_CODE, OffsetContinuity, OffsetGap, Stall
from streams.app import app

logger = logging.getLogger(__name__)

STALL_AFTER_S = 15.0


class CompleteStream:
    """Every record of `topic_name` must reach the agent `agent`."""

    def __init__(self, agent: str, topic_name: str) -> None:
        self.agent, self.topic_name = agent, topic_name
        self.continuity = OffsetContinuity()
        self.stall = Stall(after_s=STALL_AFTER_S)
        self.busy = False  # inside a record (e.g. waiting for the broker): slow, not stalled

    def check(self, message: Message) -> None:
        tp = TP(message.topic, message.partition)
        try:
            self.continuity.check(tp, message.offset, app.consumer._committed_offset.get(tp))
        except OffsetGap as gap:
            _restart(f"{self.agent}: records were skipped ({gap})")

    @contextmanager
    def processing(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def reset(self) -> None:
        self.continuity.reset()
        self.stall.reset()


_guarded: list[CompleteStream] = []


def complete_stream(agent: str, topic_name: str) -> CompleteStream:
    guard = CompleteStream(agent, topic_name)
    _guarded.append(guard)
    return guard


def _restart(reason: str) -> None:
    logger.error("%s; restarting the worker", reason)
    logging.shutdown()
    os._exit(RESTART_EXIT_CODE)


@app.on_partitions_revoked.connect
async def _forget_offsets(*_args: object, **_kwargs: object) -> None:
    for guard in _guarded:
        guard.continuity.reset()


@app.timer(interval=2.0)
async def watch_for_skipped_records() -> None:
    if app.rebalancing or app.in_recovery:
        for guard in _guarded:
            guard.stall.reset()
        return
    watched = {guard.topic_name for guard in _guarded}
    tps = [tp for tp in app.consumer.assignment() if tp.topic in watched]
    ends = await app.consumer.highwaters(*tps) if tps else {}  # one request for every guarded partition
    now = time.monotonic()
    for guard in _guarded:
        for tp in (tp for tp in tps if tp.topic == guard.topic_name):
            expected = guard.continuity.expected(tp, app.consumer._committed_offset.get(tp))
            if not guard.busy and guard.stall.stalled(tp, expected, ends.get(tp), now):
                _restart(
                    f"{guard.agent}: {tp} records {expected}..{ends[tp] - 1} are not reaching it "
                    f"({_consumer_view(tp)})"
                )


def _consumer_view(tp: TP) -> str:
    """What Faust's consumer thinks of the partition, for the log of a stall."""
    consumer = app.consumer
    active = consumer._active_partitions
    return (
        f"read offset {consumer._read_offset.get(tp)}, "
        f"active {active is None or tp in active}, paused {tp in consumer._paused_partitions}, "
        f"buffered {tp in consumer._buffered_partitions}, flow active {consumer.flow_active}, "
        f"producer buffer {app.producer.buffer.size}"
    )
