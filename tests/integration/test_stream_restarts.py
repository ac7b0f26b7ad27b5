"""Restarting the broker, or handing partitions from one worker to another gives exactly the candles and
indicator rows of an uninterrupted run: no window lost, none emitted twice with different values. A
worker killed with kill -9 mid-stream is the CI drill's `stream-worker` fault (tests/integration/
test_drill.py), which checks the same against an uninterrupted run with the whole pipeline running."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import pytest
from topic_prefixes import run_prefix

from cryptopredict import stack
from cryptopredict.drill import Run, assert_same_as_uninterrupted
from cryptopredict.kraken.sources import synthetic_market

pytestmark = pytest.mark.integration

PAIRS = ["KLA/USD", "KLB/USD"]
START = datetime(2026, 8, 1, tzinfo=UTC)


async def test_broker_restart_mid_stream_reproduces_an_uninterrupted_run(settings, tmp_path):
    trades = synthetic_market(PAIRS, START, minutes=60, seed=23)
    first, second = len(trades) // 3, len(trades) * 2 // 3
    async with Run(settings, tmp_path, run_prefix("broker")) as run:
        run.start_worker()
        await run.publish(trades[:first])
        await run.wait_until_working()
        await run.publish(trades[first:second])
        await asyncio.to_thread(stack.down, settings, ["kafka"])  # a clean broker stop and start
        await asyncio.to_thread(stack.up, settings, ["kafka"])
        await run.publish(trades[second:])  # the publisher resends what the broker refused meanwhile
        await assert_same_as_uninterrupted(settings, run, trades, PAIRS)


async def test_two_workers_split_the_pairs_and_hand_over_without_loss(settings, tmp_path):
    pairs = ["TWA/USD", "TWB/USD", "TWC/USD", "TWD/USD"]
    trades = synthetic_market(pairs, START, minutes=40, seed=22)
    half = len(trades) // 2
    async with Run(settings, tmp_path, run_prefix("two")) as run:
        one, _two = run.start_worker(), run.start_worker()
        await asyncio.sleep(12)  # both join one group and split the partitions
        await run.publish(trades[:half])
        await asyncio.sleep(3)
        os.killpg(one.pid, signal.SIGTERM)  # a clean stop: its partitions move to the other worker
        one.wait(30)
        await run.publish(trades[half:])
        await assert_same_as_uninterrupted(settings, run, trades, pairs)
