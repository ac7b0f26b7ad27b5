"""News items and sentiment scores in the feature store, and the point-in-time sentiment features that
training and live prediction both read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict.features.sentiment import SENTIMENT_WINDOWS, sentiment_features
from cryptopredict.models import NewsItem, SentimentScore
from cryptopredict.sentiment.extractor import normalize_ticker
from cryptopredict.store.dialect import IMPLICIT_FLUSH, on_risingwave
from cryptopredict.store.schema import news_items, sentiment_scores


async def insert_news_items(engine: AsyncEngine, items: Sequence[NewsItem]) -> list[str]:
    """Stores the items not seen before; returns their ids (a re-delivered item returns nothing)."""
    unique = list({item.id: item for item in items}.values())
    if not unique:
        return []
    if on_risingwave(engine):
        return await _insert_new_news_items(engine, unique)
    statement = insert(news_items).on_conflict_do_nothing(index_elements=["id"]).returning(news_items.c.id)
    async with engine.begin() as conn:
        result = await conn.execute(statement.values([item.model_dump() for item in unique]))
        return [row.id for row in result]


async def _insert_new_news_items(engine: AsyncEngine, unique: list[NewsItem]) -> list[str]:
    """RisingWave: the ids already stored are read first and only the other items inserted (an insert
    would overwrite a stored item and could not tell new from seen). Two polls at once could both take
    an item for new; the news schedule runs one poll at a time."""
    async with engine.begin() as conn:
        await conn.execute(IMPLICIT_FLUSH)
        stored = select(news_items.c.id).where(news_items.c.id.in_([item.id for item in unique]))
        seen = {row.id for row in await conn.execute(stored)}
        new = [item for item in unique if item.id not in seen]
        if new:
            await conn.execute(plain_insert(news_items), [item.model_dump() for item in new])
    return [item.id for item in new]


async def insert_sentiment_scores(engine: AsyncEngine, scores: Sequence[SentimentScore]) -> int:
    """Idempotent: a retried activity stores each (news, coin, model, prompt version) once. On RisingWave
    the row is overwritten with the newest score instead, as the score published on topic
    `news_sentiment` right after is ingested into the same row."""
    if not scores:
        return 0
    values = [s.model_dump(include=set(sentiment_scores.c.keys())) for s in scores]
    if on_risingwave(engine):
        async with engine.begin() as conn:
            await conn.execute(IMPLICIT_FLUSH)
            await conn.execute(plain_insert(sentiment_scores), values)
        return len(scores)
    statement = insert(sentiment_scores).on_conflict_do_nothing()
    async with engine.begin() as conn:
        await conn.execute(statement, values)
    return len(scores)


def read_sentiment_features(
    engine: Engine, coin: str, times: pd.DatetimeIndex, model: str | None = None
) -> pd.DataFrame:
    """Point-in-time sentiment features of `coin` at each time (see cryptopredict.features.sentiment)."""
    longest = max(SENTIMENT_WINDOWS.values())
    query = select(
        sentiment_scores.c.scored_at, sentiment_scores.c.score, sentiment_scores.c.confidence
    ).where(
        sentiment_scores.c.coin == coin,
        sentiment_scores.c.scored_at > times.min() - longest,
        sentiment_scores.c.scored_at <= times.max(),
    )
    if model is not None:
        query = query.where(sentiment_scores.c.model == model)
    with engine.connect() as conn:
        scores = pd.read_sql(query, conn)
    return sentiment_features(scores, times)


def sentiment_at_closes(
    engine: Engine, pair: str, starts: pd.DatetimeIndex, interval_s: int
) -> pd.DataFrame | None:
    """Point-in-time sentiment of the pair's coin at the close of each candle (given by window start),
    indexed by window start as the candles are; None when the pair names no coin we know."""
    coin = normalize_ticker(pair)
    if coin is None:
        return None
    features = read_sentiment_features(engine, coin, starts + pd.Timedelta(seconds=interval_s))
    features.index = starts
    return features


def scored_sentiment_at_closes(
    engine: Engine, pair: str, candles: pd.DataFrame, interval_s: int
) -> pd.DataFrame | None:
    """`sentiment_at_closes` of the candles, or None when the coin has no score in their range either:
    the model inputs then leave sentiment out rather than fill it with a constant (training and the
    drift check take it the same way)."""
    starts = pd.DatetimeIndex(candles["window_start"])
    features = sentiment_at_closes(engine, pair, starts, interval_s)
    if features is None or not features.filter(like="sentiment_count_").to_numpy().any():
        return None
    return features


def newest_sentiment_at(engine: Engine, pair: str, at: datetime) -> datetime | None:
    """When the newest score of the pair's coin at or before `at` was made; None when there is none."""
    coin = normalize_ticker(pair)
    if coin is None:
        return None
    query = select(func.max(sentiment_scores.c.scored_at)).where(
        sentiment_scores.c.coin == coin, sentiment_scores.c.scored_at <= at
    )
    with engine.connect() as conn:
        newest: datetime | None = conn.execute(query).scalar()
    return newest
