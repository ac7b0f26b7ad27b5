"""Alembic migrations on a fresh database of the real PostgreSQL: up, idempotent, down, up again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect, text

from cryptopredict.models import Candle, IndicatorRow, Prediction
from cryptopredict.store.candles import (
    async_engine,
    read_candles,
    read_indicator_values,
    sync_engine,
    upsert_candles,
    upsert_indicators,
    upsert_predictions,
)
from cryptopredict.store.ledger import ledger_summary
from cryptopredict.store.migrate import downgrade, migrate
from cryptopredict.store.namespace import remove_namespace_rows
from cryptopredict.store.schema import metadata
from cryptopredict.topics import market_key, registered_model_name

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


def keys_and_indexes(postgres) -> dict[str, tuple[list[str], list[tuple[str, list[str]]]]]:
    """Per table: its primary key's columns in order, and its other indexes with theirs."""
    engine = create_engine(postgres.url_for(postgres.database, "postgresql+psycopg"))
    try:
        inspector = inspect(engine)
        return {
            t: (
                inspector.get_pk_constraint(t)["constrained_columns"],
                sorted((i["name"], list(i["column_names"])) for i in inspector.get_indexes(t)),
            )
            for t in metadata.tables
        }
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
    assert keys_and_indexes(fresh_database) == {
        name: (
            [c.name for c in table.primary_key],
            sorted((i.name, [c.name for c in i.columns]) for i in table.indexes),
        )
        for name, table in metadata.tables.items()
    }
    downgrade(fresh_database, "base")
    assert tables(fresh_database) == {"alembic_version"}
    migrate(fresh_database)
    assert tables(fresh_database) >= set(metadata.tables)


async def test_upserts_keep_the_last_copy_of_a_window_sent_twice_in_one_batch(fresh_database):
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
    from cryptopredict.models import DeadLetter
    from cryptopredict.store.candles import insert_dead_letters

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


MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def candle(exchange: str, pair: str, start: datetime, close: float) -> Candle:
    return Candle(
        exchange=exchange,
        pair=pair,
        interval_s=60,
        window_start=start,
        window_end=start + MINUTE,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        vwap=close,
        trade_count=1,
    )


def prediction(exchange: str, pair: str, predicted: float) -> Prediction:
    market = market_key(exchange, pair)
    return Prediction(
        exchange=exchange,
        pair=pair,
        interval_s=60,
        horizon_s=60,
        made_at=T0 + MINUTE,
        feature_time=T0,
        target_time=T0 + 2 * MINUTE,
        last_price=100.0,
        predicted_price=predicted,
        lower_price=predicted - 1,
        upper_price=predicted + 1,
        model_name=registered_model_name(market, 60, 1),
        model_version="1",
    )


async def test_one_pair_and_window_on_two_venues_are_two_rows_each_read_by_its_market(fresh_database):
    # The same namespaced pair and windows on Kraken and Coinbase, through the writers the store sink calls.
    migrate(fresh_database)
    pair = "venues.EXC/USD"
    closes = {"kraken": (100.0, 102.0), "coinbase": (200.0, 204.0)}
    # Coinbase's prediction is exact; Kraken's misses its own close (102) by 1.
    predicted = {"kraken": 103.0, "coinbase": 204.0}
    candles = [
        candle(exchange, pair, T0 + i * MINUTE, close)
        for exchange, venue_closes in closes.items()
        for i, close in enumerate(venue_closes)
    ]
    indicators = [
        IndicatorRow(
            exchange=c.exchange,
            pair=pair,
            interval_s=60,
            window_start=c.window_start,
            values={"rsi_14": c.close},
            warm_up=False,
        )
        for c in candles
    ]
    writer = async_engine(fresh_database)
    try:
        assert await upsert_candles(writer, candles) == 4
        assert await upsert_indicators(writer, indicators) == 4
        assert await upsert_predictions(writer, [prediction(e, pair, p) for e, p in predicted.items()]) == 2
    finally:
        await writer.dispose()
    reader = sync_engine(fresh_database)
    try:
        for exchange, venue_closes in closes.items():
            market = market_key(exchange, pair)
            rows = read_candles(reader, market, 60)
            assert rows["close"].tolist() == list(venue_closes), exchange
            assert set(rows["exchange"]) == {exchange} and set(rows["pair"]) == {pair}
            assert read_indicator_values(reader, market, 60)["rsi_14"].tolist() == list(venue_closes)
            # Each venue's prediction meets its own venue's close in the ledger.
            (figures,) = ledger_summary(reader, market, 60, T0)
            assert figures.n == 1 and figures.model_name == registered_model_name(market, 60, 1)
            assert figures.live_mae == pytest.approx(abs(predicted[exchange] - venue_closes[1]))
            assert figures.persistence_mae == pytest.approx(venue_closes[1] - 100.0)
        assert read_candles(reader, f"binance:{pair}", 60).empty
        # `cryptopredict clean` finds the rows of every venue in the namespace.
        counts = remove_namespace_rows(reader, "venues", dry_run=True)
        assert (counts["candles"], counts["technical_indicators"], counts["predictions"]) == (4, 4, 2)
    finally:
        reader.dispose()


def test_rows_stored_before_0010_are_krakens_and_a_downgrade_keeps_them(fresh_database):
    migrate(fresh_database, "0009")
    engine = create_engine(fresh_database.url_for(fresh_database.database, "postgresql+psycopg"))
    old = candle("kraken", "OLD/USD", T0, 100.0).model_dump(exclude={"exchange"})
    insert_candle = text(
        "INSERT INTO candles (pair, interval_s, window_start, window_end, open, high, low, close, volume,"
        " vwap, trade_count, first_trade_id, last_trade_id, gap) VALUES (:pair, :interval_s,"
        " :window_start, :window_end, :open, :high, :low, :close, :volume, :vwap, :trade_count,"
        " :first_trade_id, :last_trade_id, :gap)"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert_candle, old)
        migrate(fresh_database)
        rows = read_candles(engine, "OLD/USD", 60)
        assert rows[["exchange", "pair", "close"]].values.tolist() == [["kraken", "OLD/USD", 100.0]]
        assert read_candles(engine, "coinbase:OLD/USD", 60).empty
        # A row written without a venue (a sink of the version before, during an upgrade) is Kraken's too.
        with engine.begin() as conn:
            conn.execute(insert_candle, {**old, "window_start": T0 + MINUTE, "window_end": T0 + 2 * MINUTE})
        assert read_candles(engine, "OLD/USD", 60)["exchange"].tolist() == ["kraken", "kraken"]

        # Another venue's rows would collide with Kraken's under the old keys: the downgrade refuses.
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO candles (exchange, pair, interval_s, window_start, window_end, open, high,"
                    " low, close, volume, vwap, trade_count, gap) SELECT 'binance', pair, interval_s,"
                    " window_start, window_end, open, high, low, close, volume, vwap, trade_count, gap"
                    " FROM candles"
                )
            )
        with pytest.raises(RuntimeError, match="rows of venues other than kraken"):
            downgrade(fresh_database, "0009")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM candles WHERE exchange <> 'kraken'"))
        downgrade(fresh_database, "0009")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM candles WHERE pair = 'OLD/USD'")).scalar() == 2
    finally:
        engine.dispose()
