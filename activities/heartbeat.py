"""Heartbeats of a sync activity from a side thread while it computes: one XGBoost fit or one drift
report can outlast the heartbeat timeout, and a killed worker must still be noticed within it."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from temporalio import activity


@contextmanager
def heartbeating(every_s: float = 5.0) -> Iterator[Callable[[Any], None]]:
    """Heartbeats every `every_s` while the block runs; the yielded function sets the details sent."""
    details: list[Any] = ["started"]
    stop = threading.Event()
    timeout = activity.info().heartbeat_timeout
    if timeout:  # a beat as long as the timeout would let the server time out a live activity
        every_s = min(every_s, timeout.total_seconds() / 3)

    def beat() -> None:
        while not stop.wait(every_s):
            activity.heartbeat(details[0])

    activity.heartbeat(details[0])
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True)
    thread.start()
    try:
        yield lambda value: details.__setitem__(0, value)
    finally:
        stop.set()
        thread.join()
