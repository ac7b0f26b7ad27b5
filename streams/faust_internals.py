"""The only code that reads or patches private state of Faust (faust-streaming 0.15) and mode.

Exactly-once candles and the stream guard (streams/guard.py) depend on consumer bookkeeping that Faust
does not expose: what it has committed and handed out, which partitions it holds back, what waits in the
agents' buffers, and how a message is finally acknowledged. Each accessor says which Faust issue or gap
it works around. `PRIVATE_ATTRIBUTES` lists everything touched, and tests/unit/test_faust_internals.py
fails, naming the attribute, when the pinned Faust or mode no longer has one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.utils.queues import FlowControlEvent

# (class, attribute): set in the class's code (an instance attribute) or defined on it.
PRIVATE_ATTRIBUTES: list[tuple[type, str]] = [
    (Consumer, "_committed_offset"),
    (Consumer, "_read_offset"),
    (Consumer, "_unacked_messages"),
    (Consumer, "_active_partitions"),
    (Consumer, "_buffered_partitions"),
    (Consumer, "_paused_partitions"),
    (AIOKafkaConsumer, "_thread"),
    (AIOKafkaConsumerThread, "_ensure_consumer"),
    (FlowControlEvent, "_queues"),
    (FlowControlEvent, "clear"),
    (ConsumerMessage, "on_final_ack"),
    (asyncio.Queue, "_queue"),
]


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust's consumer last committed for `tp`; None on the paths where Faust leaves it unset
    (and for a commit at 0, which it reports as none)."""
    committed: int | None = consumer._committed_offset.get(tp)
    return committed


async def broker_committed_offset(consumer: Any, tp: TP) -> int | None:
    """The consumer group's committed offset on the broker, asked in the consumer's own thread: Faust has
    no public call for it, and its own bookkeeping is unset on some assignment paths."""
    thread = consumer._thread
    committed: int | None = await thread.call_thread(thread._ensure_consumer().committed, tp)
    return committed


def read_offset(consumer: Any, tp: TP) -> int | None:
    """The last offset of `tp` the consumer handed to the agents (the next to read just after a seek)."""
    read: int | None = consumer._read_offset.get(tp)
    return read


def partition_flags(consumer: Any, tp: TP) -> tuple[bool, bool]:
    """(held back, fetched): whether Faust holds `tp` back because an agent's buffer is nearly full, and
    whether it fetches `tp` at all (active and not paused)."""
    active = consumer._active_partitions
    held_back = tp in consumer._buffered_partitions
    fetched = (active is None or tp in active) and tp not in consumer._paused_partitions
    return held_back, fetched


def agent_buffers(app: Any) -> list[Any]:
    """The agents' input buffers (mode's FlowControlQueue), as flow control knows them."""
    return list(app.flow_control._queues)


def buffered_events(buffer: Any) -> list[Any]:
    """The events waiting in one buffer, oldest first, without taking them."""
    return list(buffer._queue)


def acknowledge_without_commit(message: ConsumerMessage, consumer: Any) -> None:
    """Ends the wait for a message that some agent never got, without marking its offset processed.

    On a rebalance Faust empties the agents' buffers but keeps the references of the events it drops, and
    `Consumer.wait_empty` then waits forever inside the revocation (faust-streaming issue #133, robinhood/
    faust #402). The agents still holding the message acknowledge it; the replaced final acknowledgement
    only releases it, so it is read again after the hand-over."""

    def forget(*_args: object) -> bool:
        message.acked = True
        consumer._unacked_messages.discard(message)
        return False

    message.on_final_ack = forget  # type: ignore[method-assign,assignment]
    message.ack(consumer)


def before_buffers_clear(app: Any, hook: Callable[[], None]) -> None:
    """Runs `hook` each time Faust empties the agents' buffers (flow_control.clear: on revocation, on stop
    and on resume), just before it does: Faust has no signal for it."""
    clear = app.flow_control.clear

    def hooked_clear() -> None:
        hook()
        clear()

    app.flow_control.clear = hooked_clear
