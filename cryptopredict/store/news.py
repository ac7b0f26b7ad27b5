"""News items and sentiment scores in the feature store, and the point-in-time sentiment features that
training and live prediction both read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, func, select, update
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cryptopredict.features.sentiment import SENTIMENT_WINDOWS, sentiment_features
from cryptopredict.models import NewsItem, SentimentScore
from cryptopredict.sentiment.extractor import normalize_ticker
from cryptopredict.store.dialect import IMPLICIT_FLUSH, on_risingwave
from cryptopredict.store.schema import news_items, news_scoring, sentiment_scores
from cryptopredict.topics import split_market, split_namespace

# How an item's scoring ended (news_scoring.outcome).
SCORED = "scored"
DEAD_LETTERED = "dead_lettered"


async def insert_news_items(engine: AsyncEngine, items: Sequence[NewsItem]) -> list[str]:
    """Stores the items not seen before, each with its row in the scoring outbox (`pending_news_items`),
    in one transaction; returns their ids (a re-delivered item returns nothing)."""
    unique = list({item.id: item for item in items}.values())
    if not unique:
        return []
    if on_risingwave(engine):
        return await _insert_new_news_items(engine, unique)
    statement = insert(news_items).on_conflict_do_nothing(index_elements=["id"]).returning(news_items.c.id)
    async with engine.begin() as conn:
        result = await conn.execute(statement.values([item.model_dump() for item in unique]))
        new = {row.id for row in result}
        if new:
            outbox = insert(news_scoring).on_conflict_do_nothing(index_elements=["news_id"])
            await conn.execute(outbox, _outbox_rows([item for item in unique if item.id in new]))
        return [item.id for item in unique if item.id in new]


def _outbox_rows(items: Sequence[NewsItem]) -> list[dict[str, object]]:
    return [
        {"news_id": item.id, "ingested_at": item.ingested_at, "finished_at": None, "outcome": None}
        for item in items
    ]


async def pending_news_items(engine: AsyncEngine, limit: int) -> list[NewsItem]:
    """Stored items whose scoring has not finished (neither scored nor dead-lettered), oldest first, at
    most `limit`: an item whose ingest activity died after storing it is among them."""
    query = (
        select(news_items)
        .join(news_scoring, news_scoring.c.news_id == news_items.c.id)
        .where(news_scoring.c.finished_at.is_(None))
        .order_by(news_scoring.c.ingested_at, news_scoring.c.news_id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [NewsItem.model_validate(dict(row)) for row in rows]


async def finish_scoring(
    engine: AsyncEngine,
    news_id: str,
    outcome: str,
    at: datetime,
    scores: Sequence[SentimentScore] = (),
) -> int:
    """Stores the item's scores (none when it names no coin or was dead-lettered) and finishes its outbox
    row with `outcome` (SCORED or DEAD_LETTERED), in one transaction: a retried activity finds both done
    or neither. Returns the number of scores."""
    async with engine.begin() as conn:
        stored = await _insert_scores(conn, scores, on_risingwave(engine))
        await _finish(conn, [news_id], outcome, at)
    return stored


async def _finish(conn: AsyncConnection, news_ids: Sequence[str], outcome: str, at: datetime) -> None:
    finished = (
        update(news_scoring)
        .where(news_scoring.c.news_id.in_(news_ids), news_scoring.c.finished_at.is_(None))
        .values(finished_at=at, outcome=outcome)
    )
    await conn.execute(finished)


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
            await conn.execute(plain_insert(news_scoring), _outbox_rows(new))
    return [item.id for item in new]


async def insert_sentiment_scores(engine: AsyncEngine, scores: Sequence[SentimentScore]) -> int:
    """Idempotent: a retried activity stores each (news, coin, model, prompt version) once. On RisingWave
    the row is overwritten with the newest score instead, as the score published on topic
    `news_sentiment` right after is ingested into the same row. The scored items' outbox rows are finished
    in the same transaction."""
    if not scores:
        return 0
    async with engine.begin() as conn:
        stored = await _insert_scores(conn, scores, on_risingwave(engine))
        await _finish(conn, sorted({s.news_id for s in scores}), SCORED, max(s.scored_at for s in scores))
    return stored


async def _insert_scores(conn: AsyncConnection, scores: Sequence[SentimentScore], risingwave: bool) -> int:
    if risingwave:
        await conn.execute(IMPLICIT_FLUSH)
    if not scores:
        return 0
    values = [s.model_dump(include=set(sentiment_scores.c.keys())) for s in scores]
    statement = (
        plain_insert(sentiment_scores) if risingwave else insert(sentiment_scores).on_conflict_do_nothing()
    )
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


def coin_of(pair: str) -> str | None:
    """The coin a pair or market key (`binance:demo.BTC/USDT`) trades; None when it names none we know."""
    return normalize_ticker(split_namespace(split_market(pair)[1])[1])


def sentiment_at_closes(
    engine: Engine, pair: str, starts: pd.DatetimeIndex, interval_s: int
) -> pd.DataFrame | None:
    """Point-in-time sentiment of the pair's coin at the close of each candle (given by window start),
    indexed by window start as the candles are; None when the pair names no coin we know."""
    coin = coin_of(pair)
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
    coin = coin_of(pair)
    if coin is None:
        return None
    query = select(func.max(sentiment_scores.c.scored_at)).where(
        sentiment_scores.c.coin == coin, sentiment_scores.c.scored_at <= at
    )
    with engine.connect() as conn:
        newest: datetime | None = conn.execute(query).scalar()
    return newest
