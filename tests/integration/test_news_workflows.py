"""News and sentiment workflows on the real Temporal server, with the real local LLM server, the real
PostgreSQL and Kafka, and the local news server speaking CryptoPanic's format."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from scrape import scrape
from sqlalchemy import delete, select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from topic_prefixes import run_prefix

from cryptopredict import news_flow
from cryptopredict.cli.demo import free_port
from cryptopredict.models.news_flow import NewsIngestInput, NewsIngestResult, SentimentInput, SentimentResult
from cryptopredict.news.sources import RssSource
from cryptopredict.orchestration import metrics_runtime, temporal_client
from cryptopredict.simulators.news import INJECTION_TITLE, NewsFaults, NewsServer, sample_news_items
from cryptopredict.stack.llm import bundled_gguf
from cryptopredict.store.candles import async_engine
from cryptopredict.store.migrate import migrate
from cryptopredict.store.news import insert_news_items
from cryptopredict.store.schema import dead_letters, news_scoring, sentiment_scores
from cryptopredict.topics import sentiment_workflow_id
from workflows.news import NewsIngestWorkflow, SentimentWorkflow
from workflows.worker import build_news_workers

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def news_workers(settings, runtime=None, **llm):
    """Workers on task queues of their own (so other tests' workers never take these tasks)."""
    run = uuid.uuid4().hex[:8]
    run_settings = settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(
                update={"news_task_queue": f"news-{run}", "llm_task_queue": f"llm-{run}"}
            ),
            "news": settings.news.model_copy(update={"cryptopanic_token": SecretStr("test-token")}),
            "kafka": settings.kafka.model_copy(update={"topic_prefix": run_prefix("news")}),
            "llm": settings.llm.model_copy(update=llm),
        }
    )
    migrate(run_settings.postgres)
    client = await temporal_client(run_settings, runtime)
    workers = build_news_workers(client, run_settings)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield client, run_settings
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        for task in tasks:
            task.cancel()


async def start_scoring(client, run_settings, name: str):
    """One SentimentWorkflow for a sample item with an id of its own."""
    item = sample_news_items(1)[0].model_copy(update={"id": f"{name}-{uuid.uuid4().hex[:8]}"})
    handle = await client.start_workflow(
        SentimentWorkflow.run,
        SentimentInput(item=item, llm_task_queue=run_settings.temporal.llm_task_queue),
        id=sentiment_workflow_id(item.id),
        task_queue=run_settings.temporal.news_task_queue,
        execution_timeout=timedelta(minutes=5),
    )
    return item, handle


async def test_a_burst_of_news_is_scored_once_each(settings):
    run = uuid.uuid4().hex[:6]
    items = [item.model_copy(update={"id": f"{item.id}-{run}"}) for item in sample_news_items(6)]
    faults = NewsFaults(rate_limited_requests=1, duplicate_across_pages=True, injection_titles=True)
    async with (
        news_workers(settings) as (client, run_settings),
        NewsServer(items, faults, page_size=3) as server,
    ):
        # RSS carries the items' own guids (unique to this run); CryptoPanic's post ids restart at 1.
        request = NewsIngestInput(
            rss_feeds=[server.rss_url("all")], llm_task_queue=run_settings.temporal.llm_task_queue
        )
        ingest = dict(task_queue=run_settings.temporal.news_task_queue, result_type=NewsIngestResult)
        first = await client.execute_workflow(
            NewsIngestWorkflow.run, request, id=f"news-ingest-{uuid.uuid4().hex[:8]}", **ingest
        )
        again = await client.execute_workflow(
            NewsIngestWorkflow.run, request, id=f"news-ingest-{uuid.uuid4().hex[:8]}", **ingest
        )
        assert len(first.new) == first.sentiment_workflows_started >= len(items)
        # Nothing is scored twice: items still being scored come back (not finished yet), not restarted.
        assert len(again.new) == again.resumed and again.sentiment_workflows_started == 0
        assert any(INJECTION_TITLE in item.title for item in first.new)

        results = [
            await asyncio.wait_for(
                client.get_workflow_handle(
                    sentiment_workflow_id(item.id), result_type=SentimentResult
                ).result(),
                300,
            )
            for item in first.new
        ]
        assert [r.news_id for r in results] == [item.id for item in first.new]
        with pytest.raises(WorkflowAlreadyStartedError):  # a re-delivered item cannot start a second scoring
            await client.start_workflow(
                SentimentWorkflow.run,
                SentimentInput(item=first.new[0], llm_task_queue=run_settings.temporal.llm_task_queue),
                id=sentiment_workflow_id(first.new[0].id),
                task_queue=run_settings.temporal.news_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # as NewsIngestWorkflow starts them
            )

    engine = async_engine(run_settings.postgres)
    try:
        async with engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(sentiment_scores).where(
                            sentiment_scores.c.news_id.in_([i.id for i in first.new])
                        )
                    )
                )
                .mappings()
                .all()
            )
    finally:
        await engine.dispose()
    stored = {(r["news_id"], r["coin"]) for r in rows}
    assert stored == {(r.news_id, coin) for r in results for coin in r.coins}
    assert all(r["score"] in (-1, 0, 1) and 0 <= r["confidence"] <= 1 for r in rows)
    per_item = [sum(1 for r in rows if r["news_id"] == i.id) for i in first.new]
    assert max(per_item) <= 3  # the bounded schema holds, injection or not


async def test_with_the_llm_server_down_scoring_waits_and_completes_once_it_is_up(settings, tmp_path):
    port = free_port()
    async with news_workers(settings, base_url=f"http://127.0.0.1:{port}/v1") as (client, run_settings):
        item, handle = await start_scoring(client, run_settings, "down")
        await asyncio.sleep(6)
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        pending = described.raw_description.pending_activities
        assert pending and pending[0].attempt >= 2  # retried while the server is away

        log = (tmp_path / "llm.log").open("wb")
        server = subprocess.Popen(  # noqa: ASYNC220 (started once, never waited on in the loop)
            [
                sys.executable,
                "-m",
                "cryptopredict.stack.llm_server",
                "--model",
                str(bundled_gguf()),
                "--port",
                str(port),
                "--alias",
                run_settings.llm.model,
                "--ctx-size",
                "2048",
                "--threads",
                "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            result = await asyncio.wait_for(handle.result(), 180)
        finally:
            server.terminate()
            server.wait(30)
        assert result.news_id == item.id
        history = await handle.fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
        ]
        assert attempts and attempts[-1] >= 2  # the history shows it took several attempts


async def test_output_that_stays_invalid_goes_to_the_dead_letter_table(settings):
    # Far too few tokens for any JSON object: every attempt is cut off mid-output and fails validation.
    async with news_workers(settings, max_output_tokens=3) as (client, run_settings):
        item, handle = await start_scoring(client, run_settings, "invalid")
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 240)
        assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    engine = async_engine(run_settings.postgres)
    try:
        async with engine.connect() as conn:
            letters = (
                (await conn.execute(select(dead_letters).where(dead_letters.c.raw.contains(item.id))))
                .mappings()
                .all()
            )
    finally:
        await engine.dispose()
    assert [letter["source"] for letter in letters] == ["sentiment"]
    assert "invalid LLM output" in letters[0]["reason"]


async def test_the_worker_metrics_endpoint_counts_workflows_and_llm_calls(settings):
    port = free_port()
    runtime = metrics_runtime(
        settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"worker_port": port})})
    )
    assert runtime is not None
    async with news_workers(settings, runtime) as (client, run_settings):
        _, handle = await start_scoring(client, run_settings, "metrics")
        assert isinstance(await handle.result(), SentimentResult)
        async with asyncio.timeout(30):
            while True:  # the SDK exports on scrape, but records asynchronously
                scraped = await scrape(port)
                starts = {
                    k: v for k, v in scraped.items() if k.startswith("cryptopredict_workflow_starts_total")
                }
                if any('workflow_type="SentimentWorkflow"' in k for k in starts):
                    break
                await asyncio.sleep(0.5)
    completed = [
        v for k, v in scraped.items()
        if k.startswith("temporal_workflow_completed") and 'workflow_type="SentimentWorkflow"' in k
    ]  # fmt: skip
    assert completed and completed[0] >= 1
    calls = [
        v for k, v in scraped.items() if k.startswith("cryptopredict_llm_calls_total") and 'outcome="ok"' in k
    ]
    assert calls and calls[0] >= 1
    latency = [v for k, v in scraped.items() if k.startswith("cryptopredict_llm_latency_seconds_count")]
    assert latency and latency[0] >= 1


async def test_items_stored_by_a_run_that_died_are_scored_by_the_next_once_each_oldest_first(settings):
    """An ingest activity that dies between storing its items and returning them (its insert done, no
    result) leaves them in the scoring outbox: the next runs start their scoring, `pending_per_run` a run
    and oldest first, and each ends scored (or dead-lettered) exactly once."""
    run = uuid.uuid4().hex[:6]
    served = [item.model_copy(update={"id": f"{item.id}-died-{run}"}) for item in sample_news_items(3)]
    bounded = settings.model_copy(update={"news": settings.news.model_copy(update={"pending_per_run": 2})})
    async with news_workers(bounded) as (client, run_settings), NewsServer(served, NewsFaults()) as server:
        engine = async_engine(run_settings.postgres)
        request = NewsIngestInput(
            rss_feeds=[server.rss_url("all")], llm_task_queue=run_settings.temporal.llm_task_queue
        )
        # What the activity does before it dies: poll, store. Stored as older than anything else pending on
        # a shared stack, so the oldest-first order is observable.
        async with httpx.AsyncClient() as http:
            polled = await news_flow.poll([RssSource(server.rss_url("all"))], http, datetime.now(UTC))
        oldest = datetime(2001, 1, 1, tzinfo=UTC)
        items = [
            item.model_copy(update={"ingested_at": oldest + timedelta(minutes=n)})
            for n, item in enumerate(polled.items)
        ]
        ids = [item.id for item in items]
        try:
            assert len(ids) == 3 and sorted(await insert_news_items(engine, items)) == sorted(ids)

            async def ingest() -> NewsIngestResult:
                return await client.execute_workflow(
                    NewsIngestWorkflow.run,
                    request,
                    id=f"news-ingest-{uuid.uuid4().hex[:8]}",
                    task_queue=run_settings.temporal.news_task_queue,
                    result_type=NewsIngestResult,
                )

            async def scored(news_ids: list[str]) -> list[SentimentResult]:
                handles = [
                    client.get_workflow_handle(sentiment_workflow_id(i), result_type=SentimentResult)
                    for i in news_ids
                ]
                return [await asyncio.wait_for(handle.result(), 300) for handle in handles]

            def ours(result: NewsIngestResult) -> list[str]:
                # Other runs on a shared stack may have left items pending too (newer than ours).
                return [i.id for i in result.new if i.id in ids]

            first = await ingest()  # the retry: its insert finds every item stored already
            assert ours(first) == ids[:2] and first.resumed == 2  # the bound, oldest first
            results = await scored(ids[:2])
            second = await ingest()
            assert ours(second) == ids[2:]
            results += await scored(ids[2:])
            assert ours(await ingest()) == []  # all finished

            async with engine.connect() as conn:
                outbox = (
                    await conn.execute(select(news_scoring).where(news_scoring.c.news_id.in_(ids)))
                ).all()
                rows = (
                    await conn.execute(select(sentiment_scores).where(sentiment_scores.c.news_id.in_(ids)))
                ).all()
        finally:
            # A failed run must not leave its (oldest) items pending for the next runs on this stack.
            async with engine.begin() as conn:
                await conn.execute(delete(news_scoring).where(news_scoring.c.news_id.in_(ids)))
            await engine.dispose()
        for news_id in ids:  # one scoring workflow per item, ever
            runs = [
                w async for w in client.list_workflows(f"WorkflowId = '{sentiment_workflow_id(news_id)}'")
            ]
            assert len(runs) == 1, news_id
    assert [r.news_id for r in results] == ids
    assert {(r.news_id, r.finished_at is not None, r.outcome) for r in outbox} == {
        (i, True, "scored") for i in ids
    }
    assert sorted((r.news_id, r.coin) for r in rows) == sorted(
        (r.news_id, c) for r in results for c in r.coins
    )
