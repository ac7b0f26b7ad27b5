"""Drift checks in the feature store (table `drift_reports`, migration 0005): one row per
DriftMonitorWorkflow run, written again unchanged when its activity is retried."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict.models.drift import DriftRecord
from cryptopredict.store.candles import on_market, upsert_rows
from cryptopredict.store.schema import drift_reports

DRIFT_KEY = ("workflow_id", "run_id")


async def upsert_drift_records(engine: AsyncEngine, records: list[DriftRecord]) -> int:
    return await upsert_rows(engine, drift_reports, [r.model_dump() for r in records], DRIFT_KEY)


def read_drift_reports(engine: Engine, pair: str, interval_s: int) -> pd.DataFrame:
    """The drift checks of a (market key, interval), oldest first."""
    query = (
        select(drift_reports)
        .where(*on_market(drift_reports, pair), drift_reports.c.interval_s == interval_s)
        .order_by(drift_reports.c.checked_at)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)
