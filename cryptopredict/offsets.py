"""Continuity of consumed offsets: a stream that must see every record of a partition checks for holes.

Faust 0.15 can drop records fetched while a worker recovers its tables (faust-streaming issue #596): they
count as read, never reach the agent and are never acknowledged. Carrying on would build candles without
those trades, so the worker stops instead and starts again from the last committed offset. A hole shows
when a later record arrives (`check`), or, when the lost records were the last ones, as a partition with
records the agent has not seen while it makes no progress (`Stall`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: the stream worker's supervisor starts it again
# After SIGTERM, the supervisor gives its worker this long before killing it (Faust can hang on shutdown).
STOP_GRACE_S = 20.0
# A partition hand-over here takes seconds (10 s broker rebalance timeout, small compacted changelogs); a
# worker still rebalancing or recovering its tables after this long is stuck and is restarted.
REBALANCE_STUCK_S = 30.0
# A partition whose records the agent has not received, without progress for this long, has lost them.
STALL_AFTER_S = 15.0
# Under a backlog a partition can wait far longer for its turn without any record being lost: Faust's
# consumer hands out a fetched batch one record at a time to every agent of its topic, and waits while an
# agent's buffer is full; an agent's buffer holds thousands of records of all partitions in that order.
# A partition that is shown to be waiting (`PartitionView`) is restarted only after this long.
WAITING_STALL_AFTER_S = 120.0


class OffsetGap(RuntimeError):
    def __init__(self, partition: Hashable, expected: int, got: int) -> None:
        super().__init__(
            f"{partition}: expected offset {expected}, got {got}: records {expected}..{got - 1} skipped"
        )
        self.partition, self.expected, self.got = partition, expected, got


class OffsetContinuity:
    """Next expected offset per partition; forgotten when partitions move (`reset`)."""

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}

    def reset(self) -> None:
        self._next.clear()

    def expected(self, partition: Hashable, start: int | None) -> int | None:
        return self._next.get(partition, start)

    def received(self, partition: Hashable) -> bool:
        """Whether a record of the partition arrived since the last reset (assignment)."""
        return partition in self._next

    def check(self, partition: Hashable, offset: int, start: int | None) -> None:
        """Raises OffsetGap if records before `offset` were skipped. `start` is where reading the partition
        starts after an assignment: its committed offset (the next to read), or its first offset when
        nothing was committed (records dropped at the very start of a topic are a hole too).
        An offset at or below the expected one is a re-delivery after a seek, and is accepted."""
        expected = self.expected(partition, start)
        if expected is not None and offset > expected:
            raise OffsetGap(partition, expected, offset)
        self._next[partition] = offset + 1


class Stall:
    """Notices a partition holding records the agent has not received, without progress for `after_s`.

    Covers records Faust dropped after reading them, and a partition Faust left paused after a recovery.
    """

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._since: dict[Hashable, tuple[int, float]] = {}

    def reset(self) -> None:
        self._since.clear()

    def stalled(
        self,
        partition: Hashable,
        expected: int | None,
        end: int | None,
        now: float,
        after_s: float | None = None,
    ) -> bool:
        """`expected`: the next offset the agent should see; `end`: the partition's end offset;
        `after_s`: this check's limit, if not the usual one."""
        if expected is None or end is None or end <= expected:
            self._since.pop(partition, None)  # the agent has seen everything there is
            return False
        since = self._since.get(partition)
        if since is None or since[0] != expected:  # new, or the agent made progress meanwhile
            self._since[partition] = (expected, now)
            return False
        return now - since[1] >= (self.after_s if after_s is None else after_s)


@dataclass(frozen=True)
class PartitionView:
    """What the consumer shows of a partition whose next record (the expected one) the agent has not
    received yet."""

    queued: bool  # the expected record, or a later one of the partition, waits in an agent's buffer
    handed_out: bool  # the consumer handed the expected record out (its read offset reached it)
    held_back: bool  # the consumer holds the partition back until an agent's buffer drains
    fetched: bool  # the partition is assigned, active and not paused
    agent_received_s_ago: float  # since the agent last received a record of its topic (any partition)
    backpressure_s_ago: float  # since an agent's buffer was last seen full (the consumer then waits)


def stall_limit(view: PartitionView) -> float:
    """How long the partition may make no progress before its records count as lost.

    Long only while something shows the record is still on its way: it waits in an agent's buffer, or has
    not been handed out while the consumer serves the agent's other partitions, holds this one back, or
    waits for a full buffer. Records of other topics handed out meanwhile (the idle ticks, every second)
    show nothing: Faust drops fetched records silently (#596) and goes on serving everything else.
    """
    if view.queued:
        return WAITING_STALL_AFTER_S
    if view.handed_out:  # handed out, in no buffer, never received: lost
        return STALL_AFTER_S
    if view.held_back:
        return WAITING_STALL_AFTER_S
    if not view.fetched:
        return STALL_AFTER_S
    if min(view.agent_received_s_ago, view.backpressure_s_ago) < STALL_AFTER_S:
        return WAITING_STALL_AFTER_S
    return STALL_AFTER_S
