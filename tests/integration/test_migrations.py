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
