"""Live figures of each model version from the outcome ledger (view `prediction_outcomes`, migration
0004): the same SQL runs on PostgreSQL and on RisingWave."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

LEDGER_SUMMARY = text(
    """
    SELECT model_name, model_version,
           count(*) AS n,
           avg(abs_error) AS live_mae,
           avg(persistence_abs_error) AS persistence_mae,
           avg(CASE WHEN inside_interval THEN 1.0 ELSE 0.0 END)
               FILTER (WHERE inside_interval IS NOT NULL) AS interval_coverage
    FROM prediction_outcomes
    WHERE pair = :pair AND interval_s = :interval_s AND target_time >= :since
    GROUP BY model_name, model_version
    ORDER BY model_name, model_version
    """
)


@dataclass(frozen=True)
class LiveFigures:
    model_name: str
    model_version: str
    n: int
    live_mae: float
    persistence_mae: float
    skill_vs_persistence: float | None  # 1 - MAE / MAE_persistence; None when persistence was exact
    interval_coverage: float | None


def ledger_summary(engine: Engine, pair: str, interval_s: int, since: datetime) -> list[LiveFigures]:
    """Per model version, over the predictions whose target time is at or after `since`."""
    with engine.connect() as conn:
        rows = conn.execute(LEDGER_SUMMARY, {"pair": pair, "interval_s": interval_s, "since": since}).all()
    return [
        LiveFigures(
            model_name=row.model_name,
            model_version=row.model_version,
            n=int(row.n),
            live_mae=float(row.live_mae),
            persistence_mae=float(row.persistence_mae),
            skill_vs_persistence=(
                1.0 - float(row.live_mae) / float(row.persistence_mae) if row.persistence_mae else None
            ),
            interval_coverage=None if row.interval_coverage is None else float(row.interval_coverage),
        )
        for row in rows
    ]
