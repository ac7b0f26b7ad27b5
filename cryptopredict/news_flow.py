"""The NewsIngestWorkflow's and SentimentWorkflow's steps: each function is what one of their activities
does, so the activities (activities/news.py) only adapt Temporal to it. Rejected input (malformed news
items, a source that fails for good, output the LLM cannot get right) goes to the dead-letter table with
its reason; trouble a retry can fix raises, and Temporal retries the activity with backoff.

- ingest: polls every source, stores the items and publishes the new ones on topic `news`; returns them,
  after the stored items whose scoring never finished (the outbox, `store.news.pending_news_items`).
- score: one item's per-coin sentiment from the LLM, stored and published on topic `news_sentiment`; the
  item's outbox row is finished with its scores, or when it is dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import SecretStr
from pydantic_ai import Agent
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict import topics
from cryptopredict.models import DeadLetter, NewsItem
from cryptopredict.models.news_flow import NewsIngestInput, NewsIngestResult, SentimentResult
from cryptopredict.news.sources import (
    ConditionalCache,
    CryptoPanicSource,
    NewsSource,
    NewsSourceError,
    RssSource,
)
from cryptopredict.sentiment.extractor import (
    PROMPT_VERSION,
    HeadlineSentiment,
    SentimentOutputInvalid,
    is_transient,
    score_headline,
    to_scores,
)
from cryptopredict.store.candles import insert_dead_letters
from cryptopredict.store.news import (
    DEAD_LETTERED,
    SCORED,
    finish_scoring,
    insert_news_items,
    pending_news_items,
)
from cryptopredict.topic_writer import TopicWriter

logger = logging.getLogger(__name__)

# How a scoring call ended, for the LLM call counter: "ok", "unavailable" (Temporal retries it),
# "invalid_output" or "refused" (dead-lettered); and how long the LLM took.
CallRecorder = Callable[[str, timedelta], None]


def news_sources(
    request: NewsIngestInput, cryptopanic_token: SecretStr | None, cache: ConditionalCache
) -> list[NewsSource]:
    """Every RSS feed of the request, and CryptoPanic when it names the API and the worker has a token
    (the token stays in the worker's settings, out of histories)."""
    sources: list[NewsSource] = [RssSource(url, cache=cache) for url in request.rss_feeds]
    if request.cryptopanic_url and cryptopanic_token is not None:
        sources.append(
            CryptoPanicSource(
                request.cryptopanic_url, cryptopanic_token, currencies=request.currencies, cache=cache
            )
        )
    elif request.cryptopanic_url:
        logger.warning("CryptoPanic skipped: no news.cryptopanic_token is set")
    return sources


@dataclass(frozen=True)
class Polled:
    items: list[NewsItem] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)


async def poll(sources: Sequence[NewsSource], client: httpx.AsyncClient, at: datetime) -> Polled:
    """Every source's items. A source's rejected items, and a source that fails for good, become dead
    letters; a transient failure raises (the whole poll is retried)."""
    items: list[NewsItem] = []
    letters: list[DeadLetter] = []
    for source in sources:
        try:
            fetched = await source.fetch(client)
        except NewsSourceError as exc:
            if exc.transient:
                raise
            letters.append(DeadLetter(source=f"news:{source.name}", reason=str(exc), raw="", at=at))
            continue
        items += fetched.items
        letters += [
            DeadLetter(source=f"news:{source.name}", reason=reason, raw=raw, at=at)
            for raw, reason in fetched.rejected
        ]
    return Polled(items, letters)


def newly_stored(items: Sequence[NewsItem], new_ids: set[str]) -> list[NewsItem]:
    """The items the store did not have yet, one per id (two sources may carry the same headline)."""
    return [item for item in {i.id: i for i in items}.values() if item.id in new_ids]


def items_to_score(new: Sequence[NewsItem], pending: Sequence[NewsItem], limit: int) -> list[NewsItem]:
    """What one ingest run starts scoring: up to `limit` of the items stored by earlier runs whose scoring
    never finished (`pending`, oldest first, as the store orders them), then every item this run stored.
    The new ones are never held back by a backlog; the backlog drains `limit` a run."""
    new_ids = {item.id for item in new}
    earlier = [item for item in pending if item.id not in new_ids][:limit]
    return earlier + list(new)


async def ingest(
    sources: Sequence[NewsSource], engine: AsyncEngine, writer: TopicWriter, pending_limit: int
) -> NewsIngestResult:
    """Polls the sources, keeps the rejected items as dead letters, stores the items and publishes the new
    ones on `news`, keyed by id. Returns them to be scored, after up to `pending_limit` stored earlier and
    never scored (an earlier run died between storing and returning them), which are published again."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as client:
        polled = await poll(sources, client, datetime.now(UTC))
    if polled.letters:
        await insert_dead_letters(engine, polled.letters)
    new = newly_stored(polled.items, set(await insert_news_items(engine, polled.items)))
    # This run's items are pending too, and the newest: ask for enough to find `pending_limit` older ones.
    to_score = items_to_score(new, await pending_news_items(engine, pending_limit + len(new)), pending_limit)
    await writer.publish(topics.NEWS, [(item.id.encode(), item.to_json_bytes()) for item in to_score])
    return NewsIngestResult(
        fetched=len(polled.items),
        rejected=len(polled.letters),
        new=to_score,
        resumed=len(to_score) - len(new),
    )


def scoring_failure(exc: Exception) -> tuple[str, str | None]:
    """(outcome, dead-letter kind) of a failed scoring call: a transient one (the LLM server down, a
    timeout, a 5xx) is retried and kept nowhere; output still invalid after the agent's bounded retries,
    or a request the server refuses (e.g. too long), cannot be helped by a retry."""
    if is_transient(exc):
        return "unavailable", None
    if isinstance(exc, SentimentOutputInvalid):
        return "invalid_output", "invalid LLM output"
    return "refused", "LLM request refused"


async def score(
    agent: Agent[None, HeadlineSentiment],
    item: NewsItem,
    model: str,
    engine: AsyncEngine,
    writer: TopicWriter,
    record_call: CallRecorder,
) -> SentimentResult:
    """Scores the item's headline and stores and publishes one score per coin (keyed by coin). A failure
    a retry can fix raises as it is; any other keeps the item as a dead letter and raises
    SentimentOutputInvalid (not retried)."""
    started = time.perf_counter()
    try:
        result = await score_headline(agent, item)
    except Exception as exc:
        outcome, kind = scoring_failure(exc)
        record_call(outcome, timedelta(seconds=time.perf_counter() - started))
        if kind is None:
            logger.warning("LLM unavailable for %s (%s); Temporal retries", item.id, exc)
            raise
        letter = DeadLetter(
            source="sentiment", reason=f"{kind}: {exc}", raw=item.model_dump_json(), at=datetime.now(UTC)
        )
        await insert_dead_letters(engine, [letter])
        await finish_scoring(engine, item.id, DEAD_LETTERED, letter.at)
        raise SentimentOutputInvalid(f"{kind}: {exc}") from exc
    record_call("ok", timedelta(seconds=time.perf_counter() - started))
    scores = to_scores(result, item.id, model, datetime.now(UTC))
    await finish_scoring(engine, item.id, SCORED, datetime.now(UTC), scores)
    await writer.publish(topics.NEWS_SENTIMENT, [(s.coin.encode(), s.to_json_bytes()) for s in scores])
    return SentimentResult(
        news_id=item.id, coins=[s.coin for s in scores], model=model, prompt_version=PROMPT_VERSION
    )
