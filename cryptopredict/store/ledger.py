"""Live figures of each model version from the outcome ledger (view `prediction_outcomes`, migrations
0004 and 0007): the same SQL runs on PostgreSQL and on RisingWave."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from cryptopredict.ml.intervals import (
    REGIMES,
    christoffersen_pvalue,
    christoffersen_pvalue_of_counts,
    kupiec_pvalue,
    kupiec_pvalue_of_counts,
    winkler_score,
)
from cryptopredict.settings import ModelSettings

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
        WHERE pair = :pair AND interval_s = :interval_s AND target_time >= :since
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
# The level ACI steers the interval back to, and the level of predictions that do not say theirs (made
# before migration 0007): the configured default; the server passes the configured value.
DEFAULT_COVERAGE: float = ModelSettings.model_fields["interval_coverage"].default


@dataclass(frozen=True)
class IntervalFigures:
    """How well the prediction intervals of a run of outcomes held."""

    coverage_by_regime: dict[str, float]  # regimes with outcomes only
    interval_score: float  # mean Winkler score, in the quote currency
    kupiec_pvalue: float
    christoffersen_pvalue: float


def interval_figures(
    realised: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    inside: Sequence[bool],
    levels: Sequence[float | None],
    regimes: Sequence[str | None],
    nominal_coverage: float = DEFAULT_COVERAGE,
) -> IntervalFigures:
    """The interval figures of outcomes in target time order (at least one). Each outcome is scored at
    the level its interval was drawn at (None: `nominal_coverage`); Kupiec's test asks whether the
    coverage is the nominal one, which adaptive conformal inference steers the level towards."""
    hits = np.asarray(inside, dtype=bool)
    by_regime = {
        regime: float(np.mean(hits[mask]))
        for regime in REGIMES
        if (mask := np.asarray([r == regime for r in regimes], dtype=bool)).any()
    }
    level = np.asarray([nominal_coverage if x is None else x for x in levels], dtype=float)
    actual, low, high = (np.asarray(a, dtype=float) for a in (realised, lower, upper))
    # winkler_score takes one level: outcomes of equal level are scored together, then weighted.
    order = np.argsort(level, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(level[order]) != 0])
    total = 0.0
    for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
        group = order[start:end]
        total += winkler_score(actual[group], low[group], high[group], float(level[group[0]])) * len(group)
    return IntervalFigures(
        coverage_by_regime=by_regime,
        interval_score=total / len(order),
        kupiec_pvalue=kupiec_pvalue(hits, nominal_coverage),
        christoffersen_pvalue=christoffersen_pvalue(hits),
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
    # The figures of IntervalFigures; empty or None when no outcome had an interval.
    coverage_by_regime: dict[str, float] = field(default_factory=dict)
    interval_score: float | None = None
    kupiec_pvalue: float | None = None
    christoffersen_pvalue: float | None = None


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
    """Per model version, over the predictions whose target time is at or after `since`."""
    params = {"pair": pair, "interval_s": interval_s, "since": since}
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
