"""Reading and writing the feature store. Writes are idempotent upserts keyed by (exchange, pair,
interval_s, window_start), so replays never duplicate rows. The upserts are PostgreSQL's (the sink, off
on RisingWave, which ingests the topics itself); the dead letters of the news flow have a RisingWave path.
Readers take a target's market key (topics.market_key: the pair itself on Kraken, `coinbase:BTC/USD`
elsewhere) and select by venue and pair."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, Engine, Table, create_engine, select
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cryptopredict.models import Candle, DeadLetter, IndicatorRow, Prediction
from cryptopredict.settings import PostgresSettings
from cryptopredict.store.dialect import IMPLICIT_FLUSH, StoreDialect, engine_options, on_risingwave
from cryptopredict.store.schema import candles, dead_letters, predictions, technical_indicators
from cryptopredict.topics import split_market


def async_engine(
    settings: PostgresSettings, dialect: StoreDialect = "postgres", pre_ping: bool = True
) -> AsyncEngine:
    """`dialect`: settings.store.dialect, for an engine whose writes must take the RisingWave paths.
    `pre_ping`: test each pooled connection with a round trip before use; a writer that retries when
    the store is away (`store_unreachable`) can do without it."""
    return create_async_engine(
        settings.async_url,
        pool_size=2,
        pool_pre_ping=pre_ping,
        connect_args=settings.asyncpg_connect_args(),
        **engine_options(dialect),
    )


# SQLSTATE classes of a server that is away rather than of a bad statement: connection exceptions (08),
# and a server shutting down, restarting or not yet accepting connections (57P01-57P03).
UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def store_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the store is away (stopped, restarting, a dropped connection), which waiting
    cures, rather than that a statement or a row is wrong. Follows the causes the drivers wrap."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):  # refused, reset, timed out
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNREACHABLE_SQLSTATES):
            return True
        if type(current).__name__ in ("ConnectionDoesNotExistError", "InterfaceError") and (
            "closed" in str(current) or "connection" in str(current).lower()
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def sync_engine(settings: PostgresSettings, dialect: StoreDialect = "postgres") -> Engine:
    return create_engine(
        settings.url_for(settings.database, "postgresql+psycopg"),
        pool_pre_ping=True,
        **engine_options(dialect),
    )


WINDOW_KEY = ("exchange", "pair", "interval_s", "window_start")


def market_params(market: str) -> dict[str, str]:
    """The bind parameters `exchange` and `pair` of a market key, for SQL text that selects one market."""
    exchange, pair = split_market(market)
    return {"exchange": exchange, "pair": pair}


def on_market(table: Table, market: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The conditions selecting the rows of one market (a market key) in a table keyed by venue and pair."""
    exchange, pair = split_market(market)
    return table.c.exchange == exchange, table.c.pair == pair


async def upsert_rows(
    engine: AsyncEngine, table: Table, values: list[dict[str, Any]], key: tuple[str, ...] = WINDOW_KEY
) -> int:
    # The last row per key wins: one statement must not touch a row twice (a candle sent again after a
    # restart can land in the same micro-batch as its first copy).
    latest = list({tuple(v[k] for k in key): v for v in values}.values())
    if not latest:
        return 0
    async with engine.begin() as conn:
        # executemany: compiled once, sent as batched VALUES
        await conn.execute(_upsert_statement(table, key), latest)
    return len(latest)


@functools.cache
def _upsert_statement(table: Table, key: tuple[str, ...]) -> Insert:
    """Built once per table: building it (an `excluded` column for each column) cost the stream worker's
    event loop more than sending it, on every micro-batch."""
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(key),
        set_={col.name: statement.excluded[col.name] for col in table.columns if col.name not in key},
    )


async def upsert_candles(engine: AsyncEngine, rows: Sequence[Candle]) -> int:
    return await upsert_rows(engine, candles, [c.model_dump() for c in rows])


async def upsert_indicators(engine: AsyncEngine, rows: Sequence[IndicatorRow]) -> int:
    return await upsert_rows(engine, technical_indicators, [r.model_dump() for r in rows])


PREDICTION_KEY = (
    "exchange",
    "pair",
    "interval_s",
    "horizon_s",
    "feature_time",
    "model_name",
    "model_version",
)


async def upsert_predictions(engine: AsyncEngine, rows: Sequence[Prediction]) -> int:
    # model_dump maps each field to its column; quantiles become the JSON list of {"level", "price"}.
    return await upsert_rows(engine, predictions, [r.model_dump() for r in rows], PREDICTION_KEY)


async def insert_dead_letters(engine: AsyncEngine, rows: Sequence[DeadLetter]) -> int:
    """Stores the letters not stored yet (by `DeadLetter.store_key`); returns how many were new. On
    RisingWave (the news flow's letters) every letter is stored."""
    if not rows:
        return 0
    if on_risingwave(engine):
        # RisingWave's table has neither the identity nor the letter key (its Kafka ingestion reads each
        # record once): every letter is inserted, and the count is of all of them. Inline: no implicit
        # RETURNING of the identity.
        async with engine.begin() as conn:
            await conn.execute(IMPLICIT_FLUSH)
            await conn.execute(plain_insert(dead_letters).inline(), [r.model_dump() for r in rows])
        return len(rows)
    values = [{**r.model_dump(), "letter_key": r.store_key()} for r in rows]
    statement = insert(dead_letters).on_conflict_do_nothing(index_elements=["letter_key"])
    async with engine.begin() as conn:
        result = await conn.execute(statement.returning(dead_letters.c.id), values)
        return len(result.all())


def read_candles(engine: Engine, pair: str, interval_s: int) -> pd.DataFrame:
    """All candles of a (market key, interval) in time order, gap candles included."""
    query = (
        select(candles)
        .where(*on_market(candles, pair), candles.c.interval_s == interval_s)
        .order_by(candles.c.window_start)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def read_indicator_values(engine: Engine, pair: str, interval_s: int) -> pd.DataFrame:
    """The stored indicator rows of a (market key, interval), one column per indicator (NaN inside a
    warm-up), indexed by window_start."""
    query = (
        select(technical_indicators.c.window_start, technical_indicators.c["values"])
        .where(*on_market(technical_indicators, pair), technical_indicators.c.interval_s == interval_s)
        .order_by(technical_indicators.c.window_start)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    index = pd.DatetimeIndex([start for start, _ in rows], name="window_start")
    return pd.DataFrame([values for _, values in rows], index=index, dtype=float)
