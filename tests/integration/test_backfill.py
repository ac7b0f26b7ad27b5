"""BackfillWorkflow on the real Temporal server, paging the replay exchange's REST Trades into the real
Kafka topic: it survives a worker killed mid-run, and a second run of the same range publishes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.service import RPCError
from topic_prefixes import run_prefix
from websockets.asyncio.client import connect

from cryptopredict.kafka_admin import read_topic
from cryptopredict.kraken.protocol import subscribe_request
from cryptopredict.kraken.sources import PairSpec, synthetic_market
from cryptopredict.models import Trade, TradeBatch
from cryptopredict.models.backfill import BackfillInput, BackfillProgress
from cryptopredict.orchestration import start_backfill, temporal_client
from cryptopredict.simulators.exchange import ReplayExchange
from cryptopredict.topics import TRADES, backfill_workflow_id, topic_name

pytestmark = pytest.mark.integration

# A new book per test session: a completed backfill of a range is never run again, by design.
PAIR = f"B{uuid.uuid4().hex[:6].upper()}/USD"
START = datetime(2026, 6, 1, tzinfo=UTC)


def start_worker(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workflows.worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def run_exchange_to_the_end(trades: list[Trade]) -> ReplayExchange:
    """REST serves what has happened on the replay clock, so let the whole history happen first."""
    exchange = ReplayExchange(trades, speed="max")
    await exchange.start()
    async with connect(exchange.url) as ws:
        await ws.send(subscribe_request([PAIR]))
        await asyncio.wait_for(exchange.finished.wait(), 60)
    return exchange


async def test_backfill_survives_a_killed_worker_and_never_publishes_twice(settings, tmp_path):
    trades = synthetic_market([PairSpec(PAIR, trades_per_minute=60)], START, minutes=90, seed=3)
    exchange = await run_exchange_to_the_end(trades)
    prefix = run_prefix("bf")
    task_queue = f"backfill-{uuid.uuid4()}"
    run_settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "temporal": settings.temporal.model_copy(update={"training_task_queue": task_queue}),
        }
    )
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_TEMPORAL__TRAINING_TASK_QUEUE": task_queue,
        "CRYPTOPREDICT_KRAKEN__REST_MIN_INTERVAL_S": "0.3",
    }
    request = BackfillInput(
        pair=PAIR,
        start=START,
        end=START + timedelta(minutes=90),
        rest_url=exchange.rest_url,
        pages_per_activity=2,
    )
    client = await temporal_client(run_settings)
    handle = client.get_workflow_handle(
        backfill_workflow_id(PAIR, request.start, request.end), result_type=BackfillProgress
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = start_worker(env, log)
    try:
        await start_backfill(run_settings, request, wait=False, client=client)
        deadline = time.monotonic() + 60
        progress = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RPCError):  # the worker process is still starting
                progress = await handle.query("progress", result_type=BackfillProgress)
            if progress is not None and progress.pages >= 2:
                break
            await asyncio.sleep(0.2)
        assert progress is not None and not progress.done, (
            "backfill finished before the worker could be killed"
        )
        os.killpg(worker.pid, signal.SIGKILL)  # mid-run, with an activity in flight
        worker.wait()
        worker = start_worker(env, log)
        result = await asyncio.wait_for(handle.result(), 120)
        assert result.done and result.trades_published == len(trades)

        again = await start_backfill(run_settings, request, client=client)
        assert again == result  # the finished run's result: the range is not fetched again
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        await exchange.stop()

    topic = topic_name(TRADES, prefix)
    published = [
        t
        for v in await read_topic(run_settings.kafka, topic)
        for t in TradeBatch.model_validate_json(v).trades
    ]
    assert sorted(t.trade_id for t in published) == sorted(t.trade_id for t in trades)
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2, "the killed attempt should have been retried"
