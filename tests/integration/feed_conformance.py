"""What every venue's conformance test does: run the real feed against a replay exchange until the
exchange has served everything and Kafka acknowledged it, then stop it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from streams.trade_feed import run_feed


async def feed_to_end(settings, exchange, client, expected: int, timeout_s: float = 90) -> dict[str, int]:
    """Runs the feed with `client` until the exchange has finished and `expected` trades are
    acknowledged, plus a moment for messages that follow the last trade (an injected bad message), then
    stops it; returns the client's counters."""
    acked = 0

    def on_ack(batch, _at):
        nonlocal acked
        acked += len(batch.trades) if batch is not None else 0  # dead letters carry no batch

    feed = asyncio.create_task(run_feed(settings, client=client, on_ack=on_ack))
    deadline = time.monotonic() + timeout_s
    while not (exchange.finished.is_set() and acked >= expected) and time.monotonic() < deadline:
        if feed.done():
            feed.result()  # surfaces the feed's error
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    feed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed
    if acked < expected:
        pytest.fail(f"feed published {acked} of {expected} trades in time ({dict(client.counts)})")
    return dict(client.counts)
