"""Records settled in the background, so an agent does not wait for the broker between records.

An agent that must neither lose nor repeat output under kill -9 writes a key's state only once the broker
has the output of the record that moved it, and the record's offset is committed only after that (Faust
flushes the state's changelog before it commits). Waiting for the broker inside the agent makes each
record wait for the previous one's round trip, though records of different keys (markets) do not depend
on each other. `Settling` waits in a task per record instead:
- the key's state is written once the broker has the record's output (a refusal restarts the worker,
  which reads the record again from the committed offset);
- the record is acknowledged after that, and after every earlier record of its partition: the agent's
  stream is `noack()`, and Faust may commit past a record acknowledged out of order;
- a record of the same key waits (`ready`) until its predecessor is settled, as it starts from that state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TP, EventT, StreamT

from streams.guard import restart_worker


@dataclass
class Output:
    """What a record sent for `key`, and how to write the key's state once the broker has it."""

    key: str
    sends: list[Awaitable[Any]]
    write_state: Callable[[], None]


class Settling:
    def __init__(self, agent: str, stream: StreamT) -> None:
        self.agent = agent
        self.stream = stream  # the agent's noack() stream
        self._by_key: dict[str, asyncio.Task[None]] = {}
        self._by_partition: dict[TP, asyncio.Task[None]] = {}

    async def ready(self, key: str) -> None:
        """Returns once the previous record of `key` is settled."""
        if (task := self._by_key.get(key)) is not None:
            await task

    async def settle(self, event: EventT, output: Output | None) -> None:
        """Settles `event` (with `output`, or none) in the background; at once when nothing is pending."""
        if output is not None and not output.sends:  # nothing sent: the state is written at once
            output.write_state()
            output = None
        tp = event.message.tp
        before = self._by_partition.get(tp)
        if output is None and before is None:
            await self.stream.ack(event)
            return
        task = asyncio.create_task(self._settle(event, output, before))
        self._by_partition[tp] = task
        if output is not None:
            self._by_key[output.key] = task

    async def _settle(self, event: EventT, output: Output | None, before: asyncio.Task[None] | None) -> None:
        if output is not None:
            try:
                await asyncio.gather(*output.sends)
            except Exception as exc:
                restart_worker(f"{self.agent}: the broker did not take the output for {output.key} ({exc!r})")
            output.write_state()
        if before is not None:
            await before
        await self.stream.ack(event)
        current = asyncio.current_task()
        tp = event.message.tp
        if self._by_partition.get(tp) is current:
            del self._by_partition[tp]
        if output is not None and self._by_key.get(output.key) is current:
            del self._by_key[output.key]
