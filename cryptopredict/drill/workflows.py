"""The Temporal side of a drill: a small retrain on a training worker of the drill's own task queue, and
a news burst scored by news workers of its own queues; each checked to complete (or, for a news item,
to be dead-lettered with its reason) once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptopredict.drill.harness import NAMESPACE, DrillFailure, start_training_worker
from cryptopredict.settings import Settings
from cryptopredict.topics import namespaced_pair

HISTORY_START = datetime(2026, 9, 1, tzinfo=UTC)


def retrain_request(pair: str) -> Any:
    """A retrain with a small budget: the real steps, two tuning batches of a few trials."""
    from cryptopredict.models.training import TrainingInput

    return TrainingInput(
        pair=pair,
        interval_s=60,
        lags=5,
        folds=2,
        trials=6,
        tuning_batches=2,
        screen_time_limit_s=3.0,
        screen_max_rows=1000,
        heartbeat_timeout_s=10.0,
        reason="drill",
    )


@dataclass
class Retrain:
    """A retrain of a pair of the drill's own, on a training worker (a child process) of its own queue."""

    settings: Settings
    log_dir: Path
    pair: str = field(
        default_factory=lambda: namespaced_pair(f"DT{uuid.uuid4().hex[:4].upper()}/USD", NAMESPACE)
    )
    task_queue: str = field(default_factory=lambda: f"training-drill-{uuid.uuid4().hex[:8]}")
    worker: subprocess.Popen[bytes] | None = None
    handle: Any = None
    started_at: float = 0.0

    async def start(self) -> None:
        """The history in the store and the training worker; the workflow starts at the fault."""
        from cryptopredict.simulators.markets import synthetic_candles
        from cryptopredict.store.candles import async_engine, upsert_candles

        engine = async_engine(self.settings.postgres)
        try:  # the retrain's history in the store
            await upsert_candles(
                engine, synthetic_candles(self.pair, 60, 1500, HISTORY_START, seed=9, ar=0.0, gap_every=97)
            )
        finally:
            await engine.dispose()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "training.log").open("ab") as log:
            self.worker = start_training_worker(self.task_queue, log)

    async def start_workflow(self) -> None:
        """Starts the retrain (at the fault: a small one is over in seconds)."""
        from cryptopredict.orchestration import start_training, temporal_client
        from cryptopredict.topics import training_workflow_id

        client = await temporal_client(self.settings)
        request = retrain_request(self.pair)
        await start_training(self.settings, request, wait=False, client=client, task_queue=self.task_queue)
        self.handle = client.get_workflow_handle(training_workflow_id(self.pair, 60, 1))
        self.started_at = time.monotonic()

    async def wait_for_activity(self, names: tuple[str, ...], timeout_s: float = 300) -> str:
        """Until one of the activities `names` runs (started on a worker); returns its name."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            description = await self.handle.describe()
            for pending in description.raw_description.pending_activities:
                if pending.activity_type.name in names and pending.HasField("last_started_time"):
                    return str(pending.activity_type.name)
            if description.status.name != "RUNNING":
                raise DrillFailure(f"the retrain ended ({description.status.name}) before {names} ran")
            await asyncio.sleep(0.5)
        raise DrillFailure(f"no activity of {names} ran within {timeout_s:.0f} s")

    async def result(self, timeout_s: float = 600) -> tuple[str, int]:
        """The workflow's end (raises DrillFailure unless it completed) and its retried activity attempts."""
        from temporalio.client import WorkflowFailureError

        try:
            await asyncio.wait_for(self.handle.result(), timeout_s)
        except (WorkflowFailureError, TimeoutError) as exc:
            raise DrillFailure(f"the retrain did not complete: {exc!r}") from exc
        history = await self.handle.fetch_history()
        retries = sum(
            1
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
            and e.activity_task_started_event_attributes.attempt > 1
        )
        return "completed", retries

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()


@dataclass
class NewsBurst:
    """A burst of news items served by the news server simulator, ingested and scored through Temporal by
    news workers (in this process) on task queues of their own."""

    settings: Settings
    prefix: str
    count: int = 6
    items: list[Any] = field(default_factory=list)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    client: Any = None
    run_settings: Settings | None = None
    ingest: Any = None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _request: Any = None

    async def start(self) -> None:
        from pydantic import SecretStr

        from cryptopredict.models.news_flow import NewsIngestInput
        from cryptopredict.orchestration import temporal_client
        from cryptopredict.simulators.news import NewsServer, sample_news_items
        from workflows.worker import build_news_workers

        run = self.tag
        self.items = [
            i.model_copy(update={"id": f"{i.id}-drill-{run}"}) for i in sample_news_items(self.count)
        ]
        self.run_settings = self.settings.model_copy(
            update={
                "temporal": self.settings.temporal.model_copy(
                    update={"news_task_queue": f"news-drill-{run}", "llm_task_queue": f"llm-drill-{run}"}
                ),
                "news": self.settings.news.model_copy(update={"cryptopanic_token": SecretStr("drill")}),
                "kafka": self.settings.kafka.model_copy(update={"topic_prefix": self.prefix}),
            }
        )
        server = await self._stack.enter_async_context(NewsServer(self.items, page_size=3))
        self.client = await temporal_client(self.run_settings)
        workers = build_news_workers(self.client, self.run_settings)
        tasks = [asyncio.create_task(worker.run()) for worker in workers]

        async def stop_workers() -> None:
            await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
            for task in tasks:
                task.cancel()

        self._stack.push_async_callback(stop_workers)
        self._request = NewsIngestInput(
            rss_feeds=[server.rss_url("all")], llm_task_queue=self.run_settings.temporal.llm_task_queue
        )

    async def start_ingest(self) -> None:
        """The burst: one ingest that stores the items and starts a scoring workflow for each."""
        from cryptopredict.models.news_flow import NewsIngestResult
        from workflows.news import NewsIngestWorkflow

        assert self.run_settings is not None
        self.ingest = await self.client.start_workflow(
            NewsIngestWorkflow.run,
            self._request,
            id=f"news-ingest-drill-{self.tag}",
            task_queue=self.run_settings.temporal.news_task_queue,
            result_type=NewsIngestResult,
        )

    async def check(self, timeout_s: float = 600) -> tuple[list[str], str]:
        """Failures, and a sentence of what happened: every item scored once or dead-lettered with its
        reason, and every workflow completed (a dead-lettered item's scoring ends failed, by design)."""
        from sqlalchemy import select
        from temporalio.client import WorkflowFailureError

        from cryptopredict.models.news_flow import SentimentResult
        from cryptopredict.store.candles import async_engine
        from cryptopredict.store.schema import dead_letters, sentiment_scores
        from cryptopredict.topics import sentiment_workflow_id

        failures: list[str] = []
        result = await asyncio.wait_for(self.ingest.result(), timeout_s)
        # As the ingest names them (the feed's own ids); it also resumes items other runs left unscored.
        ids = [item.id for item in result.new if self.tag in item.id]
        scored, dead, retried = [], [], 0
        for news_id in ids:
            handle = self.client.get_workflow_handle(
                sentiment_workflow_id(news_id), result_type=SentimentResult
            )
            try:
                await asyncio.wait_for(handle.result(), timeout_s)
                scored.append(news_id)
            except WorkflowFailureError:
                dead.append(news_id)
            history = await handle.fetch_history()
            retried += sum(
                1
                for e in history.events
                if e.HasField("activity_task_started_event_attributes")
                and e.activity_task_started_event_attributes.attempt > 1
            )
        assert self.run_settings is not None
        engine = async_engine(self.run_settings.postgres)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(sentiment_scores.c.news_id).where(sentiment_scores.c.news_id.in_(ids))
                    )
                ).all()
                letters = (
                    await conn.execute(
                        select(dead_letters.c.raw, dead_letters.c.reason).where(
                            dead_letters.c.source == "sentiment"
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        with_scores = {r[0] for r in rows}
        lettered = {news_id: reason for raw, reason in letters for news_id in ids if f'"{news_id}"' in raw}
        if len(ids) != len(self.items):
            failures.append(f"the ingest stored {len(ids)} of {len(self.items)} items")
        for news_id in ids:
            if news_id in scored and news_id not in with_scores:
                failures.append(f"{news_id}: scoring completed but no score stored")
            if news_id in dead and not lettered.get(news_id):
                failures.append(f"{news_id}: scoring failed without a dead letter")
            if news_id in scored and news_id in lettered:
                failures.append(f"{news_id}: scored and dead-lettered")
        summary = f"{len(scored)} scored, {len(dead)} dead-lettered, {retried} LLM calls retried"
        return failures, summary

    async def stop(self) -> None:
        await self._stack.aclose()
