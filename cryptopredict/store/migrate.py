"""Brings the feature store's schema to the newest Alembic revision (idempotent, safe to run from
several processes at once: a PostgreSQL advisory lock serialises them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from cryptopredict.settings import PostgresSettings
from cryptopredict.store.candles import sync_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant of our own: the advisory lock id that serialises concurrent upgrades.
MIGRATION_LOCK = 74_002_001


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(settings: PostgresSettings, revision: str = "head") -> None:
    _run(settings, command.upgrade, revision)


def downgrade(settings: PostgresSettings, revision: str) -> None:
    _run(settings, command.downgrade, revision)


def _run(settings: PostgresSettings, action: Callable[[Config, str], None], revision: str) -> None:
    engine = sync_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config, revision)
    finally:
        engine.dispose()
