from dataclasses import replace

import pytest

from cryptopredict.offsets import (
    STALL_AFTER_S,
    WAITING_STALL_AFTER_S,
    OffsetContinuity,
    OffsetGap,
    PartitionView,
    Stall,
    stall_limit,
)

pytestmark = pytest.mark.unit


def test_contiguous_offsets_pass_and_a_hole_is_reported():
    continuity = OffsetContinuity()
    for offset in (20, 21):
        continuity.check("trades-0", offset, start=20)
    with pytest.raises(OffsetGap) as gap:
        continuity.check("trades-0", 25, start=20)
    assert (gap.value.expected, gap.value.got) == (22, 25)


def test_first_record_after_an_assignment_is_checked_against_where_reading_starts():
    continuity = OffsetContinuity()
    with pytest.raises(OffsetGap):
        continuity.check("trades-1", 7, start=3)
    with pytest.raises(OffsetGap):  # nothing committed: the partition's first offset is expected
        continuity.check("trades-2", 4, start=0)
    continuity.check("trades-0", 9, start=None)  # where reading starts is not known: accepted


def test_re_delivery_after_a_seek_and_reset_after_a_rebalance():
    continuity = OffsetContinuity()
    continuity.check("trades-0", 10, start=10)
    continuity.check("trades-0", 8, start=10)  # sought back: records come again
    continuity.check("trades-0", 9, start=10)
    continuity.reset()
    continuity.check("trades-0", 50, start=50)  # another worker moved the partition on meanwhile


def test_records_the_agent_does_not_get_without_progress_are_a_stall():
    stall = Stall(after_s=10)
    assert not stall.stalled("p", expected=28, end=49, now=0)
    assert not stall.stalled("p", expected=28, end=49, now=9)
    assert stall.stalled("p", expected=28, end=49, now=10)
    stall.reset()
    assert not stall.stalled("p", expected=28, end=49, now=11)


def test_progress_or_nothing_unread_is_no_stall():
    stall = Stall(after_s=10)
    assert not stall.stalled("p", expected=28, end=49, now=0)
    assert not stall.stalled("p", expected=30, end=49, now=10)  # the agent moved on: a backlog
    assert not stall.stalled("p", expected=49, end=49, now=30)  # caught up
    assert not stall.stalled("p", expected=None, end=49, now=40)


def test_a_longer_limit_while_backpressured_counts_from_the_same_start():
    stall = Stall(after_s=10)
    assert not stall.stalled("p", expected=28, end=49, now=0)
    assert not stall.stalled("p", expected=28, end=49, now=15, after_s=120)  # waiting behind a full buffer
    assert stall.stalled("p", expected=28, end=49, now=16)  # the buffer drained, nothing came: stalled
    assert stall.stalled("p", expected=28, end=49, now=120, after_s=120)


# A partition fetched by an idle consumer, its next record neither handed out nor in any buffer, while the
# agent received nothing for a minute and no buffer was full: the records Faust dropped on fetching (#596).
DROPPED = PartitionView(
    queued=False,
    handed_out=False,
    held_back=False,
    fetched=True,
    agent_received_s_ago=60.0,
    backpressure_s_ago=float("inf"),
)


def test_records_dropped_on_fetching_are_lost_however_busy_other_topics_are():
    # The idle ticks are handed out every second meanwhile: that is no reason to wait.
    assert stall_limit(DROPPED) == STALL_AFTER_S
    assert stall_limit(replace(DROPPED, fetched=False)) == STALL_AFTER_S  # paused, never resumed


def test_a_record_on_its_way_gets_the_longer_limit():
    waiting = [
        replace(DROPPED, queued=True),  # in an agent's buffer, behind thousands of others
        replace(DROPPED, held_back=True, fetched=False),  # held back until a buffer drains
        replace(DROPPED, agent_received_s_ago=3.0),  # the agent is served the topic's other partitions
        replace(DROPPED, backpressure_s_ago=5.0),  # a full buffer holds the whole consumer back
    ]
    assert [stall_limit(view) for view in waiting] == [WAITING_STALL_AFTER_S] * len(waiting)


def test_a_record_handed_out_and_in_no_buffer_is_lost_even_while_the_agent_is_busy():
    handed_out = replace(DROPPED, handed_out=True, agent_received_s_ago=1.0, backpressure_s_ago=1.0)
    assert stall_limit(handed_out) == STALL_AFTER_S
    assert stall_limit(replace(handed_out, queued=True)) == WAITING_STALL_AFTER_S


def test_whether_a_partition_received_a_record_since_the_assignment():
    continuity = OffsetContinuity()
    assert not continuity.received("trades-0")
    continuity.check("trades-0", 4, start=4)
    assert continuity.received("trades-0") and not continuity.received("trades-1")
    continuity.reset()
    assert not continuity.received("trades-0")
