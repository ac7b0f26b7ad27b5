"""Reading and writing candles. Writes are idempotent upserts, so replays never duplicate rows."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cryptopredict.models import Candle
from cryptopredict.settings import PostgresSettings
from cryptopredict.store.schema import candles


def async_engine(settings: PostgresSettings) -> AsyncEngine:
    return create_async_engine(settings.async_url, pool_size=2, pool_pre_ping=True)


def sync_engine(settings: PostgresSettings) -> Engine:
    return create_engine(settings.url_for(settings.database, "postgresql+psycopg"), pool_pre_ping=True)


async def upsert_candles(engine: AsyncEngine, rows: Sequence[Candle]) -> int:
    if not rows:
        return 0
    values = [c.model_dump() for c in rows]
    statement = insert(candles).values(values)
    keys = {"pair", "interval_s", "window_start"}
    statement = statement.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={col.name: statement.excluded[col.name] for col in candles.columns if col.name not in keys},
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
    return len(values)


def read_candles(engine: Engine, pair: str, interval_s: int) -> pd.DataFrame:
    """All candles of a (pair, interval) in time order, gap candles included."""
    query = (
        select(candles)
        .where(candles.c.pair == pair, candles.c.interval_s == interval_s)
        .order_by(candles.c.window_start)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)
