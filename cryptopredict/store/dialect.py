"""Which database the feature store is (`settings.store.dialect`): the engines of `store.candles` carry it,
and the writes that differ on RisingWave read it from the engine they are given.

On RisingWave (infra/risingwave/feature_store.sql) a table with a primary key overwrites a row inserted
again with the same key, and there is no INSERT ... ON CONFLICT, no SELECT ... FOR UPDATE, no advisory
lock and no read-write transaction (a BEGIN is accepted and ignored). The RisingWave paths read what they
must not overwrite first and insert the rest, and write whole rows; tests/unit/test_risingwave_sql.py
parses every statement of both paths.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

StoreDialect = Literal["postgres", "risingwave"]

# A user-defined execution option of the engine (SQLAlchemy keeps unknown keys for the application).
_OPTION = "cryptopredict_store_dialect"

# A write is visible to reads only after RisingWave's next barrier; with implicit flush each INSERT
# returns once it is, as the callers expect from PostgreSQL (a news poll right after the last one).
IMPLICIT_FLUSH = text("SET RW_IMPLICIT_FLUSH = true")


def engine_options(dialect: StoreDialect) -> dict[str, Any]:
    """Keyword arguments of create_engine / create_async_engine for a store of this dialect."""
    options: dict[str, Any] = {"execution_options": {_OPTION: dialect}}
    if dialect == "risingwave":
        # No BEGIN / COMMIT round trips for transactions RisingWave does not have.
        options["isolation_level"] = "AUTOCOMMIT"
    return options


def store_dialect(engine: Engine | AsyncEngine) -> StoreDialect:
    """The dialect the engine was made for (`postgres` for an engine made without one)."""
    sync = getattr(engine, "sync_engine", engine)  # an AsyncEngine's options are its sync engine's
    dialect: StoreDialect = sync.get_execution_options().get(_OPTION, "postgres")
    return dialect


def on_risingwave(engine: Engine | AsyncEngine) -> bool:
    return store_dialect(engine) == "risingwave"
