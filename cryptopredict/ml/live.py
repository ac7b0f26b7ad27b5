"""The live figures of a model version, from the outcomes of its predictions (the outcome ledger):
what GetLedger, ListModels, the drift monitor and the report show. Pure: the store computes them
(cryptopredict.store.ledger), everything else reads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cryptopredict.ml.intervals import REGIMES, christoffersen_pvalue, kupiec_pvalue, winkler_score
from cryptopredict.settings import ModelSettings

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
