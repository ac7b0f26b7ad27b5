"""News items and the per-coin sentiment an LLM extracts from them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cryptopredict.models.base import DomainModel, UtcDatetime


class NewsItem(DomainModel):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    summary: str = ""
    url: str
    source: str
    published_at: UtcDatetime
    ingested_at: UtcDatetime
    currencies: list[str] = Field(default_factory=list)


class SentimentScore(DomainModel):
    news_id: str
    coin: str = Field(pattern=r"^[A-Z0-9]{2,10}$")
    score: Literal[-1, 0, 1]
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(default="", max_length=300)
    model: str
    prompt_version: str = Field(min_length=1)
    scored_at: UtcDatetime
