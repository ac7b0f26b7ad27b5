"""News and sentiment activities: thin adapters from the news workflows to their steps in
cryptopredict.news_flow (the news sources, the LLM, the store and Kafka)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from cryptopredict import metrics, news_flow
from cryptopredict.models.news_flow import (
    NewsIngestInput,
    NewsIngestResult,
    SentimentInput,
    SentimentResult,
)
from cryptopredict.news.sources import ConditionalCache
from cryptopredict.sentiment.extractor import build_agent
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine
from cryptopredict.topic_writer import TopicWriter

logger = logging.getLogger(__name__)


class NewsActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: AsyncEngine | None = None
        self._agent = build_agent(settings.llm)
        # ETags and Last-Modified per URL for the life of the worker: unchanged feeds answer 304.
        self._cache = ConditionalCache()
        self._topics = TopicWriter(settings.kafka)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = async_engine(self.settings.postgres, self.settings.store.dialect)
        return self._engine

    @activity.defn(name="ingest_news")
    async def ingest_news(self, request: NewsIngestInput) -> NewsIngestResult:
        """Polls every source, keeps rejected items as dead letters, stores and publishes the new ones;
        returns them to be scored, with stored items whose scoring never finished (news.pending_per_run)."""
        sources = news_flow.news_sources(request, self.settings.news.cryptopanic_token, self._cache)
        pending_limit = self.settings.news.pending_per_run
        result = await news_flow.ingest(sources, self.engine, self._topics, pending_limit)
        logger.info(
            "news: %d fetched, %d new, %d rejected, %d stored earlier and not yet scored",
            result.fetched,
            len(result.new) - result.resumed,
            result.rejected,
            result.resumed,
        )
        return result

    @activity.defn(name="score_news")
    async def score_news(self, request: SentimentInput) -> SentimentResult:
        """One item's sentiment; the LLM calls counted by outcome and timed (the worker's metrics)."""
        meter = activity.metric_meter()
        calls = meter.create_counter(metrics.LLM_CALLS, "LLM sentiment calls, by outcome")
        latency = meter.create_histogram_timedelta(metrics.LLM_LATENCY, "LLM sentiment call latency")

        def record_call(outcome: str, took: timedelta) -> None:
            latency.record(took)
            calls.add(1, {"outcome": outcome})

        model = self.settings.llm.model
        return await news_flow.score(self._agent, request.item, model, self.engine, self._topics, record_call)
