"""Agents that must see every record of their input partitions register a `CompleteStream` here.

Faust 0.15 can drop records it fetched while the worker recovered its tables (see cryptopredict.offsets).
Each guarded agent checks the offsets it receives; a watchdog timer notices records that never arrive.
Either way the worker exits with RESTART_EXIT_CODE and its supervisor (`python -m streams`) starts it
again from the committed offsets, before a later record changed the agent's state.

Partition hand-overs (rebalances) have two more holes in Faust, both of which leave the worker waiting
forever, processing nothing, while the checks above stand aside for the rebalance:
- On a rebalance (and on stop) Faust empties the agents' buffers but keeps the references of the events it
  drops. A message that several agents consume (a candle: indicators, predictions, store) and that one of
  them had already taken can then never be fully acknowledged, and `Consumer.wait_empty` waits for it
  forever inside the revocation (the "wait_empty: Waiting for tasks" warnings, with agent tracebacks ending
  in `async_generator_asend`; faust-streaming issue #133, robinhood/faust #402). `release_dropped_events`
  releases those references, so the wait ends, without acknowledging such a message: not every agent got
  it, so it is read again after the hand-over.
- Table recovery after a hand-over can stop receiving the changelog it waits for ("No event received for
  active tp ... since recovery start"). The watchdog restarts a worker that rebalances or recovers for
  longer than REBALANCE_STUCK_S, as it does for skipped records.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

from cryptopredict.offsets import (
    REBALANCE_STUCK_S,
    RESTART_EXIT_CODE,
    STALL_AFTER_S,
    OffsetContinuity,
    OffsetGap,
    PartitionView,
    Stall,
    stall_limit,
)
from streams import faust_internals
from streams.app import app

logger = logging.getLogger(__name__)


class CompleteStream:
    """Every record of `topic_name` must reach the agent `agent`."""

    def __init__(self, agent: str, topic_name: str) -> None:
        self.agent, self.topic_name = agent, topic_name
        self.continuity = OffsetContinuity()
        self.stall = Stall(after_s=STALL_AFTER_S)
        self.busy = False  # inside a record (e.g. waiting for the broker): slow, not stalled
        self.received_at = 0.0  # when the agent last received a record of its topic (any partition)
        self._starts: dict[TP, int | None] = {}

    async def start_of(self, tp: TP) -> int | None:
        """Where reading `tp` starts after an assignment: the committed offset as Faust's consumer knows it,
        else as the broker knows it (Faust leaves its own unset on some paths, and reports a commit at 0
        as none), else, with nothing committed, the partition's first offset (auto_offset_reset earliest).
        The broker is asked once per assignment."""
        committed = faust_internals.committed_offset(app.consumer, tp)
        if committed is not None:
            return committed
        if tp not in self._starts:
            self._starts[tp] = await faust_internals.broker_committed_offset(app.consumer, tp)
            if self._starts[tp] is None:
                self._starts[tp] = (await app.consumer.earliest_offsets(tp)).get(tp)
        return self._starts[tp]

    async def check(self, message: Message) -> None:
        tp = TP(message.topic, message.partition)
        try:
            self.continuity.check(tp, message.offset, await self.start_of(tp))
        except OffsetGap as gap:
            restart_worker(f"{self.agent}: records were skipped ({gap})")
        self.received_at = time.monotonic()

    @contextmanager
    def processing(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def forget_offsets(self) -> None:
        """After a revocation: the partitions may come back moved on by another worker."""
        self.continuity.reset()
        self._starts.clear()


_guarded: list[CompleteStream] = []


def complete_stream(agent: str, topic_name: str) -> CompleteStream:
    guard = CompleteStream(agent, topic_name)
    _guarded.append(guard)
    return guard


def restart_worker(reason: str) -> NoReturn:
    """Ends the worker at once; its supervisor starts it again from the committed offsets."""
    logger.error("%s; restarting the worker", reason)
    logging.shutdown()
    os._exit(RESTART_EXIT_CODE)


@app.on_partitions_revoked.connect
async def _forget_offsets(*_args: object, **_kwargs: object) -> None:
    for guard in _guarded:
        guard.forget_offsets()


def release_dropped_events(buffers: Iterable[Any], consumer: Any) -> None:
    """Releases the reference each buffered event holds on its message, as Faust drops the events: the
    agents still holding the message end the wait for it, and its offset is not marked processed."""
    for buffer in buffers:
        for event in faust_internals.buffered_events(buffer):
            message = getattr(event, "message", None)
            if isinstance(message, ConsumerMessage) and not message.acked:
                faust_internals.acknowledge_without_commit(message, consumer)


faust_internals.before_buffers_clear(
    app, lambda: release_dropped_events(faust_internals.agent_buffers(app), app.consumer)
)

_rebalancing_since: float | None = None


@app.timer(interval=2.0)
async def watch_for_skipped_records() -> None:
    global _rebalancing_since
    if app.rebalancing or app.in_recovery:
        now = time.monotonic()
        _rebalancing_since = _rebalancing_since or now
        if now - _rebalancing_since >= REBALANCE_STUCK_S:
            restart_worker(
                f"the worker has been rebalancing or recovering its tables for {now - _rebalancing_since:.0f} s"
            )
        for guard in _guarded:
            guard.stall.reset()
        return
    _rebalancing_since = None
    watched = {guard.topic_name for guard in _guarded}
    tps = [tp for tp in app.consumer.assignment() if tp.topic in watched]
    ends = await app.consumer.highwaters(*tps) if tps else {}  # one request for every guarded partition
    now = time.monotonic()
    _pressure.update(now)
    queued = _queued_ends()
    for guard in _guarded:
        for tp in (tp for tp in tps if tp.topic == guard.topic_name):
            expected = guard.continuity.expected(tp, await guard.start_of(tp))
            if expected is None or guard.busy:
                continue
            view = _view(guard, tp, expected, queued, now)
            if guard.stall.stalled(tp, expected, ends.get(tp), now, stall_limit(view)):
                restart_worker(
                    f"{guard.agent}: {tp} records {expected}..{ends[tp] - 1} are not reaching it "
                    f"(read offset {faust_internals.read_offset(app.consumer, tp)}, {view})"
                )


class _Pressure:
    """When an agent's buffer was last seen full: the consumer then hands out nothing until that agent
    takes records. (A nearly full one only holds its own partitions back: `PartitionView.held_back`.)
    Remembered between checks, as a buffer the agent is draining right now fills again as soon as the
    consumer hands out more."""

    def __init__(self) -> None:
        self.seen_at = float("-inf")

    def update(self, now: float) -> None:
        if any(queue.full() for queue in faust_internals.agent_buffers(app)):
            self.seen_at = now


_pressure = _Pressure()


def _queued_ends() -> dict[TP, int]:
    """The highest offset of each partition with records waiting in an agent's buffer."""
    ends: dict[TP, int] = {}
    for queue in faust_internals.agent_buffers(app):
        for event in faust_internals.buffered_events(queue):
            message = getattr(event, "message", None)
            if message is not None and message.offset > ends.get(message.tp, -1):
                ends[message.tp] = message.offset
    return ends


def _view(guard: CompleteStream, tp: TP, expected: int, queued: dict[TP, int], now: float) -> PartitionView:
    # The read offset is the last record handed out; after a seek (at an assignment) it is the next one
    # to read, so equal to the expected record only counts once a record arrived since the assignment.
    read = faust_internals.read_offset(app.consumer, tp)
    held_back, fetched = faust_internals.partition_flags(app.consumer, tp)
    return PartitionView(
        queued=queued.get(tp, -1) >= expected,
        handed_out=read is not None
        and (read > expected or (read == expected and guard.continuity.received(tp))),
        held_back=held_back,
        fetched=fetched,
        agent_received_s_ago=round(now - guard.received_at, 1),
        backpressure_s_ago=round(now - _pressure.seen_at, 1),
    )
