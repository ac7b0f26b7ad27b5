"""News items and sentiment scores in the real PostgreSQL: re-delivered items are new only once, and the
point-in-time sentiment features never see a score made after the feature time; the news schedule on
the real Temporal server exists once however often a worker starts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import select

from cryptopredict.models import NewsItem, SentimentScore
from cryptopredict.orchestration import ensure_news_schedule, temporal_client
from cryptopredict.store.candles import async_engine, sync_engine
from cryptopredict.store.migrate import migrate
from cryptopredict.store.news import (
    DEAD_LETTERED,
    SCORED,
    finish_scoring,
    insert_news_items,
    insert_sentiment_scores,
    pending_news_items,
    read_sentiment_features,
)
from cryptopredict.store.schema import news_scoring
from cryptopredict.topics import NEWS_SCHEDULE_ID

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 12, tzinfo=UTC)


def news(news_id: str, minutes: int) -> NewsItem:
    at = T0 + timedelta(minutes=minutes)
    return NewsItem(
        id=news_id,
        title=f"headline {news_id}",
        url=f"https://example.test/{news_id}",
        source="test",
        published_at=at,
        ingested_at=at,
    )


async def test_items_are_new_once_and_features_have_no_look_ahead(settings):
    migrate(settings.postgres)
    coin = f"T{uuid.uuid4().hex[:6].upper()}"
    ids = [f"{coin}-{i}" for i in range(3)]
    engine = async_engine(settings.postgres)
    try:
        assert sorted(await insert_news_items(engine, [news(i, n) for n, i in enumerate(ids)])) == sorted(ids)
        assert await insert_news_items(engine, [news(ids[0], 0), news(ids[0], 0)]) == []  # re-delivered
        scores = [
            SentimentScore(
                news_id=news_id,
                coin=coin,
                score=score,
                confidence=1.0,
                model="m",
                prompt_version="v1",
                scored_at=T0 + timedelta(minutes=minutes),
            )
            for news_id, score, minutes in [(ids[0], 1, -30), (ids[1], -1, 0), (ids[2], -1, 1)]
        ]
        await insert_sentiment_scores(engine, scores)
        await insert_sentiment_scores(engine, scores)  # a retried activity stores nothing twice
    finally:
        await engine.dispose()
    reader = sync_engine(settings.postgres)
    try:
        times = pd.DatetimeIndex(
            [T0 - timedelta(minutes=31), T0, T0 + timedelta(seconds=59), T0 + timedelta(minutes=1)]
        )
        frame = read_sentiment_features(reader, coin, times)
    finally:
        reader.dispose()
    # The score made at +1 min is about older news, but it is not known before +1 min.
    assert frame["sentiment_count_1h"].tolist() == [0, 2, 2, 3]
    assert frame["sentiment_mean_1h"].iloc[1] == 0.0 and frame["sentiment_mean_1h"].iloc[3] == pytest.approx(
        -1 / 3
    )


async def test_the_news_schedule_exists_once_however_often_workers_start(settings):
    client = await temporal_client(settings)
    handle = client.get_schedule_handle(NEWS_SCHEDULE_ID)
    try:
        await ensure_news_schedule(settings, client)
        assert await ensure_news_schedule(settings, client) is False
        assert await ensure_news_schedule(settings, client) is False
        described = await handle.describe()
        assert described.schedule.policy.overlap.name == "SKIP"
        ids = [s.id async for s in await client.list_schedules()]
        assert ids.count(NEWS_SCHEDULE_ID) == 1
    finally:
        await handle.delete()


async def test_the_llm_endpoint_check_skips_a_server_that_is_not_ollama(settings):
    from cryptopredict.cli.demo import free_port
    from cryptopredict.llm_endpoint import ensure_llm_model, server_root

    assert server_root("http://127.0.0.1:11434/v1/") == "http://127.0.0.1:11434"
    assert await ensure_llm_model(settings.llm) == "other"  # the local llama.cpp server
    closed = settings.llm.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    assert await ensure_llm_model(closed) == "unreachable"


async def test_the_scoring_outbox_holds_stored_items_until_scored_or_dead_lettered(settings):
    migrate(settings.postgres)
    run = uuid.uuid4().hex[:6]
    old = datetime(2000, 1, 1, tzinfo=UTC)  # older than anything else pending on a shared stack
    items = [
        news(f"outbox-{run}-{n}", n).model_copy(update={"ingested_at": old + timedelta(minutes=n)})
        for n in range(4)
    ]
    ids = [item.id for item in items]
    engine = async_engine(settings.postgres)
    try:
        await insert_news_items(engine, list(reversed(items)))
        assert [i.id for i in await pending_news_items(engine, 3)] == ids[:3]  # oldest first, bounded
        assert (await pending_news_items(engine, 1))[0] == items[0]  # the stored item, whole
        score = SentimentScore(
            news_id=ids[0], coin="BTC", score=1, confidence=1.0, model="m", prompt_version="v1", scored_at=T0
        )
        await insert_sentiment_scores(engine, [score])  # scores stored: scored
        await finish_scoring(engine, ids[1], DEAD_LETTERED, T0)
        await finish_scoring(engine, ids[2], SCORED, T0, [])  # scored, naming no coin
        await finish_scoring(engine, ids[1], SCORED, T0)  # a finished row stays as it ended
        assert [i.id for i in await pending_news_items(engine, 3)][:1] == ids[3:]
        await finish_scoring(engine, ids[3], SCORED, T0)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(news_scoring).where(news_scoring.c.news_id.in_(ids)))).all()
    finally:
        await engine.dispose()
    assert sorted((r.news_id, r.outcome) for r in rows) == [
        (ids[0], SCORED), (ids[1], DEAD_LETTERED), (ids[2], SCORED), (ids[3], SCORED)
    ]  # fmt: skip
    assert all(r.finished_at is not None for r in rows)
