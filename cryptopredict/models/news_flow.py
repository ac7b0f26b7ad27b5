"""Inputs and results of the news and sentiment workflows (Temporal payloads, JSON)."""

from __future__ import annotations

from pydantic import Field

from cryptopredict.models.base import DomainModel
from cryptopredict.models.news import NewsItem


class NewsIngestInput(DomainModel):
    """Where to poll. Secrets (the CryptoPanic token) stay in the worker's settings, out of histories."""

    cryptopanic_url: str | None = None
    rss_feeds: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=list)
    llm_task_queue: str = "llm"


class NewsIngestResult(DomainModel):
    fetched: int
    rejected: int
    # The items to score: the ones this run stored, after `resumed` stored by earlier runs whose scoring
    # never finished (news_flow.items_to_score).
    new: list[NewsItem]
    sentiment_workflows_started: int = 0
    resumed: int = 0


class SentimentInput(DomainModel):
    item: NewsItem
    llm_task_queue: str


class SentimentResult(DomainModel):
    news_id: str
    coins: list[str]
    model: str
    prompt_version: str
