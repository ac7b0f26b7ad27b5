"""The news workflows' steps (cryptopredict.news_flow) without the sites, the store or Kafka: which sources
a poll asks, what becomes a dead letter and what is retried, which items are new, and how one scoring
call ends (pydantic-ai's FunctionModel standing in for the LLM; the store and the topic writer recorded).
Parsing is test_news_sources.py's, the LLM error classes test_sentiment.py's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from cryptopredict import news_flow, topics
from cryptopredict.models import DeadLetter, NewsItem
from cryptopredict.models.news_flow import NewsIngestInput
from cryptopredict.news.sources import (
    ConditionalCache,
    CryptoPanicSource,
    FetchResult,
    NewsSourceError,
    RssSource,
)
from cryptopredict.sentiment.extractor import PROMPT_VERSION, SentimentOutputInvalid, build_agent
from cryptopredict.settings import LlmSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def item(news_id: str, title: str = "Bitcoin rallies") -> NewsItem:
    return NewsItem(
        id=news_id, title=title, url="https://example.org/n", source="rss", published_at=T0, ingested_at=T0
    )


# --- ingestion ------------------------------------------------------------------------------------------


def test_cryptopanic_is_polled_only_with_the_workers_token_and_every_feed_shares_the_cache():
    cache = ConditionalCache()
    request = NewsIngestInput(
        cryptopanic_url="https://cryptopanic.com/api/v1/posts/",
        rss_feeds=["https://a.example/rss", "https://b.example/atom"],
        currencies=["btc"],
    )
    with_token = news_flow.news_sources(request, SecretStr("t"), cache)
    assert [type(s) for s in with_token] == [RssSource, RssSource, CryptoPanicSource]
    assert all(s.cache is cache for s in with_token)  # type: ignore[attr-defined]
    assert with_token[2].currencies == ["BTC"]  # type: ignore[attr-defined]
    assert [type(s) for s in news_flow.news_sources(request, None, cache)] == [RssSource, RssSource]


class Source:
    def __init__(self, name: str, result: FetchResult | Exception) -> None:
        self.name, self.result = name, result

    async def fetch(self, client: httpx.AsyncClient) -> FetchResult:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_rejected_items_and_a_source_failing_for_good_become_dead_letters():
    good = Source("feed", FetchResult(items=[item("a"), item("b")], rejected=[("<item/>", "no title")]))
    gone = Source("old", NewsSourceError("404 Not Found", transient=False, status=404))
    async with httpx.AsyncClient() as client:
        polled = await news_flow.poll([good, gone], client, T0)
    assert [i.id for i in polled.items] == ["a", "b"]
    assert polled.letters == [
        DeadLetter(source="news:feed", reason="no title", raw="<item/>", at=T0),
        DeadLetter(source="news:old", reason="404 Not Found", raw="", at=T0),
    ]


async def test_a_transient_failure_fails_the_whole_poll_for_a_retry():
    down = Source("down", NewsSourceError("503", transient=True, status=503))
    async with httpx.AsyncClient() as client:
        with pytest.raises(NewsSourceError):
            await news_flow.poll([Source("feed", FetchResult(items=[item("a")])), down], client, T0)


def test_new_items_are_the_ones_the_store_did_not_have_once_each():
    items = [item("a"), item("b"), item("a", "the same headline from a second source"), item("c")]
    assert [i.id for i in news_flow.newly_stored(items, {"a", "c"})] == ["a", "c"]
    assert news_flow.newly_stored(items, set()) == []


# --- scoring --------------------------------------------------------------------------------------------


def test_only_a_transient_failure_is_retried_without_a_dead_letter():
    assert news_flow.scoring_failure(ModelHTTPError(503, "m")) == ("unavailable", None)
    assert news_flow.scoring_failure(SentimentOutputInvalid("x")) == ("invalid_output", "invalid LLM output")
    assert news_flow.scoring_failure(ModelHTTPError(400, "m")) == ("refused", "LLM request refused")


class Recorded:
    """The store's inserts, the topic writer's records and the calls' outcomes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.letters: list[DeadLetter] = []
        self.scores: list[Any] = []
        self.published: list[tuple[str, list[tuple[bytes, bytes]]]] = []
        self.calls: list[str] = []
        self.finished: list[tuple[str, str]] = []  # (news id, outcome) of the scoring outbox

        async def letters(engine: object, rows: list[DeadLetter]) -> int:
            self.letters += rows
            return len(rows)

        async def finish(engine: object, news_id: str, outcome: str, at: datetime, rows: Any = ()) -> int:
            self.scores += rows
            self.finished.append((news_id, outcome))
            return len(rows)

        monkeypatch.setattr(news_flow, "insert_dead_letters", letters)
        monkeypatch.setattr(news_flow, "finish_scoring", finish)

    async def publish(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        self.published.append((topic, list(records)))

    def record_call(self, outcome: str, took: timedelta) -> None:
        assert took >= timedelta(0)
        self.calls.append(outcome)


def agent_answering(answer: str | Exception):
    agent = build_agent(LlmSettings(base_url="http://127.0.0.1:9/v1"))

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if isinstance(answer, Exception):
            raise answer
        return ModelResponse(parts=[TextPart(answer)])

    return agent, FunctionModel(reply)


async def score(recorded: Recorded, answer: str | Exception):
    agent, model = agent_answering(answer)
    with agent.override(model=model):
        return await news_flow.score(agent, item("n1"), "smollm2", None, recorded, recorded.record_call)  # type: ignore[arg-type]


async def test_a_scored_item_is_stored_and_published_per_coin(monkeypatch: pytest.MonkeyPatch):
    recorded = Recorded(monkeypatch)
    answer = {
        "scores": [
            {"coin": "BTC", "score": 1, "confidence": 0.8},
            {"coin": "ETH", "score": 0, "confidence": 0.5},
        ],
        "reason": "up",
    }
    result = await score(recorded, json.dumps(answer))
    assert (result.news_id, result.coins, result.model, result.prompt_version) == (
        "n1",
        ["BTC", "ETH"],
        "smollm2",
        PROMPT_VERSION,
    )
    assert [(s.news_id, s.coin, s.score) for s in recorded.scores] == [("n1", "BTC", 1), ("n1", "ETH", 0)]
    assert [(topic, [key for key, _ in records]) for topic, records in recorded.published] == [
        (topics.NEWS_SENTIMENT, [b"BTC", b"ETH"])
    ]
    assert recorded.calls == ["ok"] and recorded.letters == []
    assert recorded.finished == [("n1", "scored")]


async def test_output_that_stays_invalid_is_a_dead_letter_and_fails_for_good(monkeypatch: pytest.MonkeyPatch):
    recorded = Recorded(monkeypatch)
    with pytest.raises(SentimentOutputInvalid, match=r"^invalid LLM output: "):
        await score(recorded, "not json at all")
    assert recorded.calls == ["invalid_output"] and recorded.scores == [] and recorded.published == []
    [letter] = recorded.letters
    assert letter.source == "sentiment" and letter.reason.startswith("invalid LLM output: ")
    assert NewsItem.model_validate_json(letter.raw) == item("n1")
    assert recorded.finished == [("n1", "dead_lettered")]


async def test_a_down_llm_raises_as_it_is_and_keeps_nothing(monkeypatch: pytest.MonkeyPatch):
    recorded = Recorded(monkeypatch)
    with pytest.raises(ModelHTTPError):
        await score(recorded, ModelHTTPError(503, "smollm2"))
    assert recorded.calls == ["unavailable"] and recorded.letters == [] and recorded.scores == []
    assert recorded.finished == []  # still pending: Temporal retries it


def test_items_to_score_are_the_oldest_pending_up_to_the_bound_then_every_new_one() -> None:
    pending = [item(f"old{n}") for n in range(4)] + [item("new1"), item("new2")]  # as stored: oldest first
    new = [item("new1"), item("new2")]
    assert [i.id for i in news_flow.items_to_score(new, pending, 2)] == ["old0", "old1", "new1", "new2"]
    assert [i.id for i in news_flow.items_to_score(new, pending, 10)] == [
        "old0", "old1", "old2", "old3", "new1", "new2"
    ]  # fmt: skip
    # The new ones are never held back, even by a full backlog; a run that stored nothing resumes alone.
    assert [i.id for i in news_flow.items_to_score(new, pending[:4], 1)] == ["old0", "new1", "new2"]
    assert [i.id for i in news_flow.items_to_score([], pending[:4], 3)] == ["old0", "old1", "old2"]
    assert news_flow.items_to_score([], [], 5) == []
