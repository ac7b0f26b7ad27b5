"""Live figures of each model version from the outcome ledger (view `prediction_outcomes`, migrations
0004 and 0007): the same SQL runs on PostgreSQL and on RisingWave."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from cryptopredict.ml.intervals import REGIMES, christoffersen_pvalue_of_counts, kupiec_pvalue_of_counts
from cryptopredict.ml.live import DEFAULT_COVERAGE, IntervalFigures, LiveFigures
from cryptopredict.store.candles import market_params

LEDGER_SUMMARY = text(
    """
    SELECT model_name, model_version,
           count(*) AS n,
           avg(abs_error) AS live_mae,
           avg(persistence_abs_error) AS persistence_mae,
           avg(CASE WHEN inside_interval THEN 1.0 ELSE 0.0 END)
               FILTER (WHERE inside_interval IS NOT NULL) AS interval_coverage
    FROM prediction_outcomes
    WHERE exchange = :exchange AND pair = :pair AND interval_s = :interval_s AND target_time >= :since
    GROUP BY model_name, model_version
    ORDER BY model_name, model_version
    """
)
# The interval figures of the outcomes that had one, aggregated in the store (a ledger of months of
# 1-minute predictions is read every 15 s): per regime counts, the mean Winkler score at each outcome's
# own level, and the counts Kupiec's and Christoffersen's tests need (the latter from each outcome and
# the one before it, in target time order).
LEDGER_INTERVALS = text(
    """
    WITH outcomes AS (
        SELECT model_name, model_version, inside_interval, volatility_regime,
               (upper_price - lower_price) + 2.0 / (1.0 - coalesce(interval_level, :nominal))
                   * (greatest(lower_price - realised_price, 0) + greatest(realised_price - upper_price, 0))
                   AS winkler,
               lag(inside_interval) OVER (
                   PARTITION BY model_name, model_version ORDER BY target_time
               ) AS previous
        FROM prediction_outcomes
        WHERE exchange = :exchange AND pair = :pair AND interval_s = :interval_s AND target_time >= :since
          AND inside_interval IS NOT NULL
    )
    SELECT model_name, model_version,
           count(*) AS n,
           count(*) FILTER (WHERE NOT inside_interval) AS misses,
           avg(winkler) AS interval_score,
           count(*) FILTER (WHERE previous AND inside_interval) AS n00,
           count(*) FILTER (WHERE previous AND NOT inside_interval) AS n01,
           count(*) FILTER (WHERE NOT previous AND inside_interval) AS n10,
           count(*) FILTER (WHERE NOT previous AND NOT inside_interval) AS n11,
           count(*) FILTER (WHERE volatility_regime = 'calm') AS n_calm,
           count(*) FILTER (WHERE volatility_regime = 'calm' AND inside_interval) AS hits_calm,
           count(*) FILTER (WHERE volatility_regime = 'mid') AS n_mid,
           count(*) FILTER (WHERE volatility_regime = 'mid' AND inside_interval) AS hits_mid,
           count(*) FILTER (WHERE volatility_regime = 'wild') AS n_wild,
           count(*) FILTER (WHERE volatility_regime = 'wild' AND inside_interval) AS hits_wild
    FROM outcomes
    GROUP BY model_name, model_version
    """
)


def _interval_figures(row: Any, nominal_coverage: float) -> IntervalFigures:
    """IntervalFigures from one row of LEDGER_INTERVALS."""
    by_regime = {
        regime: getattr(row, f"hits_{regime}") / n for regime in REGIMES if (n := getattr(row, f"n_{regime}"))
    }
    return IntervalFigures(
        coverage_by_regime=by_regime,
        interval_score=float(row.interval_score),
        kupiec_pvalue=kupiec_pvalue_of_counts(row.n, row.misses, nominal_coverage),
        christoffersen_pvalue=christoffersen_pvalue_of_counts(row.n00, row.n01, row.n10, row.n11),
    )


def ledger_summary(
    engine: Engine,
    pair: str,
    interval_s: int,
    since: datetime,
    nominal_coverage: float = DEFAULT_COVERAGE,
) -> list[LiveFigures]:
    """Per model version of a (market key, interval), over the predictions whose target time is at or
    after `since`."""
    params = {**market_params(pair), "interval_s": interval_s, "since": since}
    with engine.connect() as conn:
        rows = conn.execute(LEDGER_SUMMARY, params).all()
        interval_rows = conn.execute(LEDGER_INTERVALS, {**params, "nominal": nominal_coverage}).all()
    intervals = {
        (r.model_name, r.model_version): _interval_figures(r, nominal_coverage) for r in interval_rows
    }
    figures = []
    for row in rows:
        interval = intervals.get((row.model_name, row.model_version))
        figures.append(
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
                coverage_by_regime={} if interval is None else interval.coverage_by_regime,
                interval_score=None if interval is None else interval.interval_score,
                kupiec_pvalue=None if interval is None else interval.kupiec_pvalue,
                christoffersen_pvalue=None if interval is None else interval.christoffersen_pvalue,
            )
        )
    return figures
