"""The backfill's activity without Kraken or Kafka: what a page does to the progress, which trades a
resumed attempt skips, when a call stops (cryptopredict.backfill), what the activity hands it on a retry,
and the one-model activity's introduction behind workflow.patched() (runs from before it keep their
two-argument form; runs after it replay too)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from test_workflow_logic import test_server_path

import cryptopredict.backfill
from activities.backfill import BackfillActivities
from cryptopredict.backfill import publish_pages, unpublished
from cryptopredict.kraken.rest import to_ns
from cryptopredict.models import Trade
from cryptopredict.models.backfill import BackfillInput, BackfillProgress, TradePagesInput
from cryptopredict.settings import Settings
from workflows.backfill import TRADE_PAGES_INPUT, BackfillWorkflow

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S0 = to_ns(T0)
END_NS = to_ns(T0 + timedelta(hours=1))
HISTORY = Path(__file__).resolve().parents[1] / "histories" / "BackfillWorkflow.json"


def trades(*ids: int) -> list[Trade]:
    return [
        Trade(
            pair="BTC/USD",
            trade_id=i,
            price=100.0,
            qty=1.0,
            side="buy",
            timestamp=T0 + timedelta(seconds=i),
            ingested_at=T0,
        )
        for i in ids
    ]


def start(**update: Any) -> BackfillProgress:
    return BackfillProgress(pair="BTC/USD", since_ns=S0, end_ns=END_NS).model_copy(update=update)


# --- progress and pages --------------------------------------------------------------------------------


def test_a_page_advances_the_progress_and_an_empty_or_final_page_ends_it():
    after = start().after_page(trades(1, 2, 3), S0 + 3_000)
    assert (after.since_ns, after.pages, after.trades_published, after.last_trade_id, after.done) == (
        S0 + 3_000,
        1,
        3,
        3,
        False,
    )
    # A `last` behind the progress never moves it back.
    assert after.after_page(trades(4), S0).since_ns == after.since_ns
    empty = after.after_page([], after.since_ns)
    assert empty.done and empty.last_trade_id == 3 and empty.trades_published == 3
    assert after.after_page(trades(4), END_NS).done


def test_trades_already_in_the_topic_are_skipped():
    assert [t.trade_id for t in unpublished(trades(4, 5, 6, 7), 5)] == [6, 7]
    assert [t.trade_id for t in unpublished(trades(4, 5), None)] == [4, 5]


async def pages_of(*pages: tuple[list[Trade], int]) -> AsyncIterator[tuple[list[Trade], int]]:
    for page in pages:
        yield page


class Published(list[list[int]]):
    async def __call__(self, batch: list[Trade]) -> None:
        self.append([t.trade_id for t in batch])


async def test_a_call_publishes_only_new_trades_checkpoints_each_page_and_stops_after_its_pages():
    published, checkpoints = Published(), []
    source = pages_of((trades(1, 2, 3), S0 + 3), (trades(4, 5), S0 + 5), (trades(6), S0 + 6))
    progress = await publish_pages(source, published, start(), 2, 2, checkpoints.append)
    assert published == [[3], [4, 5]]  # a killed attempt had published up to trade 2
    assert [c.pages for c in checkpoints] == [1, 2] and checkpoints[-1] == progress
    assert (progress.pages, progress.trades_published, progress.since_ns, progress.done) == (
        2,
        5,
        S0 + 5,
        False,
    )


async def test_a_call_is_done_at_an_empty_page_or_when_the_source_runs_out():
    published = Published()
    done = await publish_pages(
        pages_of((trades(1), S0 + 1), ([], S0 + 1), (trades(2), S0 + 2)),
        published,
        start(),
        None,
        9,
        lambda _: None,
    )
    assert done.done and done.pages == 2 and published == [[1], []]
    ran_out = await publish_pages(
        pages_of((trades(1), S0 + 1)), Published(), start(), None, 9, lambda _: None
    )
    assert ran_out.done and ran_out.pages == 1


# --- the activity ---------------------------------------------------------------------------------------


@pytest.fixture
def core_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The activity's calls of cryptopredict.backfill.publish_trade_pages; each checkpoints once."""
    calls: list[dict[str, Any]] = []

    async def fake(settings, request, checkpoint, *, resumed=None, retried=False):
        calls.append({"request": request, "resumed": resumed, "retried": retried})
        progress = (resumed or request.progress).after_page(trades(9), END_NS)
        checkpoint(progress)
        return progress

    monkeypatch.setattr(cryptopredict.backfill, "publish_trade_pages", fake)
    return calls


async def test_a_retried_attempt_resumes_from_its_last_heartbeat(core_calls):
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    checkpoint = start(pages=4, since_ns=S0 + 40, last_trade_id=8)
    env.info = dataclasses.replace(
        env.info, attempt=2, heartbeat_details=[checkpoint.model_dump(mode="json")]
    )
    request = TradePagesInput(progress=start(pages=3), rest_url="http://exchange", max_pages=5)
    result = await env.run(BackfillActivities(Settings()).publish_trade_pages, request)
    assert core_calls == [{"request": request, "resumed": checkpoint, "retried": True}]
    assert result.pages == 5 and beats == [result.model_dump(mode="json")]  # heartbeated as JSON


async def test_the_two_argument_form_does_the_same_call_for_workflows_from_before_the_patch(core_calls):
    request = BackfillInput(
        pair="BTC/USD", start=T0, end=T0 + timedelta(hours=1), rest_url="http://x", pages_per_activity=3
    )
    progress = start(pages=1)
    activities = BackfillActivities(Settings())
    await ActivityEnvironment().run(activities.backfill_trade_pages, request, progress)
    await ActivityEnvironment().run(activities.publish_trade_pages, TradePagesInput.of(request, progress))
    first, second = core_calls
    assert (
        first
        == second
        == {
            "request": TradePagesInput(progress=progress, rest_url="http://x", max_pages=3),
            "resumed": None,
            "retried": False,
        }
    )


# --- the workflow on both sides of the patch -------------------------------------------------------------


def scheduled(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(activity type, number of arguments) of every activity the history scheduled."""
    return [
        (a["activityType"]["name"], len(a["input"]["payloads"]))
        for e in events
        if (a := e.get("activityTaskScheduledEventAttributes"))
    ]


def test_the_committed_history_is_from_before_the_patch():
    events = json.loads(HISTORY.read_text())["events"]
    assert not any("markerRecordedEventAttributes" in e for e in events)
    assert scheduled(events) == [("backfill_trade_pages", 2)] * 3  # replayed by test_workflow_replay.py


async def test_a_new_run_records_the_patch_calls_the_one_model_activity_and_replays():
    @activity.defn(name="publish_trade_pages")
    async def page(request: TradePagesInput) -> BackfillProgress:
        progress = request.progress  # three pages, the third reaching the end of the range
        return progress.after_page(
            trades(progress.pages + 1), END_NS if progress.pages == 2 else progress.since_ns + 1
        )

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
    )
    try:
        request = BackfillInput(pair="BTC/USD", start=T0, end=T0 + timedelta(hours=1), pages_per_activity=1)
        async with Worker(
            env.client,
            task_queue=f"unit-{uuid.uuid4().hex[:8]}",
            workflows=[BackfillWorkflow],
            activities=[page],
        ) as worker:
            handle = await env.client.start_workflow(
                BackfillWorkflow.run,
                request,
                id=f"backfill-{uuid.uuid4().hex[:6]}",
                task_queue=worker.task_queue,
            )
            result = await handle.result()
            history = await handle.fetch_history()
    finally:
        await env.shutdown()
    assert result.done and result.pages == 3
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(markers) == 1 and TRADE_PAGES_INPUT.encode() in markers[0].SerializeToString()
    events = json.loads(history.to_json())["events"]
    assert scheduled(events) == [("publish_trade_pages", 1)] * 3
    replayed = await Replayer(
        workflows=[BackfillWorkflow], data_converter=pydantic_data_converter
    ).replay_workflow(history)
    assert replayed.replay_failure is None
