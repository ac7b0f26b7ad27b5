"""News and sentiment activities: thin adapters over cryptopredict.news, cryptopredict.sentiment and the
store. Rejected input (malformed news items, output the LLM cannot get right) goes to the dead-letter
table with its reason."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from cryptopredict import metrics, topics
from cryptopredict.kafka_admin import ensure_topics
from cryptopredict.models import DeadLetter, NewsItem
from cryptopredict.models.news_flow import (
    NewsIngestInput,
    NewsIngestResult,
    SentimentInput,
    SentimentResult,
)
from cryptopredict.news.sources import (
    ConditionalCache,
    CryptoPanicSource,
    NewsSource,
    NewsSourceError,
    RssSource,
)
from cryptopredict.publisher import publish_records
from cryptopredict.sentiment.extractor import (
    PROMPT_VERSION,
    SentimentOutputInvalid,
    build_agent,
    is_transient,
    score_headline,
    to_scores,
)
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine, insert_dead_letters
from cryptopredict.store.news import insert_news_items, insert_sentiment_scores

logger = logging.getLogger(__name__)


class NewsActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: AsyncEngine | None = None
        self._agent = build_agent(settings.llm)
        # ETags and Last-Modified per URL for the life of the worker: unchanged feeds answer 304.
        self._cache = ConditionalCache()
        self._topics_ready = False

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = async_engine(self.settings.postgres)
        return self._engine

    def _sources(self, request: NewsIngestInput) -> list[NewsSource]:
        sources: list[NewsSource] = [RssSource(url, cache=self._cache) for url in request.rss_feeds]
        token = self.settings.news.cryptopanic_token
        if request.cryptopanic_url and token is not None:
            sources.append(
                CryptoPanicSource(
                    request.cryptopanic_url, token, currencies=request.currencies, cache=self._cache
                )
            )
        elif request.cryptopanic_url:
            logger.warning("CryptoPanic skipped: no news.cryptopanic_token is set")
        return sources

    async def _publish(self, topic: str, values: list[tuple[bytes, bytes]]) -> None:
        if not self._topics_ready:
            await ensure_topics(self.settings.kafka)
            self._topics_ready = True
        name = topics.topic_name(topic, self.settings.kafka.topic_prefix)
        await publish_records(self.settings.kafka, name, values)

    @activity.defn(name="ingest_news")
    async def ingest_news(self, request: NewsIngestInput) -> NewsIngestResult:
        """Fetches every source, keeps rejected items as dead letters, stores and publishes the new ones."""
        items: list[NewsItem] = []
        letters: list[DeadLetter] = []
        now = datetime.now(UTC)
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as client:
            for source in self._sources(request):
                try:
                    fetched = await source.fetch(client)
                except NewsSourceError as exc:
                    if exc.transient:
                        raise  # Temporal retries the activity with backoff
                    letters.append(DeadLetter(source=f"news:{source.name}", reason=str(exc), raw="", at=now))
                    continue
                items += fetched.items
                letters += [
                    DeadLetter(source=f"news:{source.name}", reason=reason, raw=raw, at=now)
                    for raw, reason in fetched.rejected
                ]
        if letters:
            await insert_dead_letters(self.engine, letters)
        new_ids = set(await insert_news_items(self.engine, items))
        new = [item for item in {i.id: i for i in items}.values() if item.id in new_ids]
        await self._publish(topics.NEWS, [(item.id.encode(), item.to_json_bytes()) for item in new])
        logger.info("news: %d fetched, %d new, %d rejected", len(items), len(new), len(letters))
        return NewsIngestResult(fetched=len(items), rejected=len(letters), new=new)

    @activity.defn(name="score_news")
    async def score_news(self, request: SentimentInput) -> SentimentResult:
        item = request.item
        meter = activity.metric_meter()
        calls = meter.create_counter(metrics.LLM_CALLS, "LLM sentiment calls, by outcome")
        latency = meter.create_histogram_timedelta(metrics.LLM_LATENCY, "LLM sentiment call latency")
        started = time.perf_counter()
        try:
            result = await score_headline(self._agent, item)
        except Exception as exc:
            latency.record(timedelta(seconds=time.perf_counter() - started))
            if is_transient(exc):
                calls.add(1, {"outcome": "unavailable"})
                logger.warning("LLM unavailable for %s (%s); Temporal retries", item.id, exc)
                raise
            calls.add(
                1, {"outcome": "invalid_output" if isinstance(exc, SentimentOutputInvalid) else "refused"}
            )
            # Output still invalid after the agent's bounded retries, or a request the server refuses
            # (e.g. too long): retrying cannot help, so the item is kept as a dead letter with the reason.
            kind = "invalid LLM output" if isinstance(exc, SentimentOutputInvalid) else "LLM request refused"
            letter = DeadLetter(
                source="sentiment", reason=f"{kind}: {exc}", raw=item.model_dump_json(), at=datetime.now(UTC)
            )
            await insert_dead_letters(self.engine, [letter])
            raise SentimentOutputInvalid(f"{kind}: {exc}") from exc
        latency.record(timedelta(seconds=time.perf_counter() - started))
        calls.add(1, {"outcome": "ok"})
        model = self.settings.llm.model
        scores = to_scores(result, item.id, model, datetime.now(UTC))
        await insert_sentiment_scores(self.engine, scores)
        await self._publish(topics.NEWS_SENTIMENT, [(s.coin.encode(), s.to_json_bytes()) for s in scores])
        return SentimentResult(
            news_id=item.id, coins=[s.coin for s in scores], model=model, prompt_version=PROMPT_VERSION
        )
