"""Alembic migrations on a fresh database of the real PostgreSQL: up, idempotent, down, up again."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from cryptopredict.store.migrate import downgrade, migrate
from cryptopredict.store.schema import metadata

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_database(settings):
    name = f"migration_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        settings.postgres.url_for("postgres", "postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield settings.postgres.model_copy(update={"url": settings.postgres.url_for(name)})
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def tables(postgres) -> set[str]:
    engine = create_engine(postgres.url_for(postgres.database, "postgresql+psycopg"))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_create_the_schema_the_code_uses(fresh_database):
    migrate(fresh_database)
    migrate(fresh_database)  # a second run is a no-op
    assert tables(fresh_database) == set(metadata.tables) | {"alembic_version"}
    engine = create_engine(fresh_database.url_for(fresh_database.database, "postgresql+psycopg"))
    try:
        columns = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in metadata.tables}
    finally:
        engine.dispose()
    assert columns == {name: {c.name for c in table.columns} for name, table in metadata.tables.items()}
    downgrade(fresh_database, "base")
    assert tables(fresh_database) == {"alembic_version"}
    migrate(fresh_database)
    assert tables(fresh_database) >= set(metadata.tables)


async def test_upserts_keep_the_last_copy_of_a_window_sent_twice_in_one_batch(fresh_database):
    from datetime import UTC, datetime, timedelta

    from cryptopredict.models import Candle
    from cryptopredict.store.candles import async_engine, read_candles, sync_engine, upsert_candles

    migrate(fresh_database)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    first = Candle(
        pair="UPS/USD",
        interval_s=60,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        open=1.0,
        high=2.0,
        low=1.0,
        close=2.0,
        volume=3.0,
        vwap=1.5,
        trade_count=2,
    )
    again = first.model_copy(update={"close": 1.5, "trade_count": 3})
    engine = async_engine(fresh_database)
    try:
        assert await upsert_candles(engine, [first, again]) == 1
        assert await upsert_candles(engine, [again]) == 1
    finally:
        await engine.dispose()
    reader = sync_engine(fresh_database)
    try:
        rows = read_candles(reader, "UPS/USD", 60)
    finally:
        reader.dispose()
    assert len(rows) == 1 and rows.loc[0, "close"] == 1.5 and rows.loc[0, "trade_count"] == 3


async def test_dead_letters_are_stored_once_and_older_copies_are_merged(fresh_database):
    from datetime import UTC, datetime

    from cryptopredict.models import DeadLetter
    from cryptopredict.store.candles import async_engine, insert_dead_letters

    letter = DeadLetter(
        source="candle_builder", reason="invalid trade batch: x", raw='{"ü": 1}', at=datetime.now(UTC)
    )
    other = letter.model_copy(update={"raw": "{other"})
    # Before revision 0006 a sink replay stored a letter twice: the upgrade keys both and keeps one.
    migrate(fresh_database, "0005")
    engine = create_engine(fresh_database.url_for(fresh_database.database, "postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            for row in (letter, letter, other):
                conn.execute(
                    text(
                        "INSERT INTO dead_letters (source, reason, raw, at) VALUES (:source, :reason, :raw, :at)"
                    ),
                    row.model_dump(),
                )
        migrate(fresh_database)
        with engine.connect() as conn:
            keys = sorted(conn.execute(text("SELECT letter_key FROM dead_letters")).scalars())
        assert keys == sorted([letter.store_key(), other.store_key()])

        store = async_engine(fresh_database)
        try:
            assert await insert_dead_letters(store, [letter, other]) == 0
            later = letter.model_copy(update={"at": datetime.now(UTC)})  # rejected again: a new letter
            assert await insert_dead_letters(store, [later, later]) == 1
        finally:
            await store.dispose()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar() == 3
    finally:
        engine.dispose()
