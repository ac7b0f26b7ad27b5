"""What `cryptopredict report` draws, read from the feature store: the outcomes of one (market key,
interval, horizon) from the ledger (view `prediction_outcomes`), the candles over the same range, and the
model inputs of two windows for drift.

The range ends at the newest candle of the pair (not the wall clock, so a replayed or stopped feed still
has a report) and spans `hours`: outcomes whose target time is in [since, until] (the same `since` as
`ledger_summary`), candles that close in it. Drift compares the model inputs of that recent window with
the window of the same length just before it, built by the training and live code (`feature_frame`
over indicators computed from the candles, with a warm-up read before the reference window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select, text

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.features.model_inputs import feature_frame
from cryptopredict.ml.dataset import indicator_values
from cryptopredict.ml.drift import psi
from cryptopredict.ml.live import DEFAULT_COVERAGE, IntervalFigures, interval_figures
from cryptopredict.store.candles import market_params, on_market
from cryptopredict.store.schema import candles

# Candles read before the reference window so that every indicator is past its warm-up there (the longest
# default window is 60; EMAs settle within a few times their window).
WARM_UP_CANDLES = 300

OUTCOMES = text(
    """
    SELECT target_time, feature_time, made_at, model_name, model_version, last_price, predicted_price,
           lower_price, upper_price, realised_price, abs_error, persistence_abs_error, inside_interval,
           interval_level, volatility_regime
    FROM prediction_outcomes
    WHERE exchange = :exchange AND pair = :pair AND interval_s = :interval_s AND horizon_s = :horizon_s
      AND target_time >= :since AND target_time <= :until
    ORDER BY target_time, made_at
    """
)


@dataclass(frozen=True)
class OutcomeSummary:
    n: int
    live_mae: float | None
    persistence_mae: float | None
    skill_vs_persistence: float | None  # 1 - MAE / MAE_persistence; None when persistence was exact
    interval_coverage: float | None
    intervals: IntervalFigures | None = None  # what the ledger reports of the intervals; None without any

    @classmethod
    def of(cls, outcomes: pd.DataFrame, nominal_coverage: float = DEFAULT_COVERAGE) -> OutcomeSummary:
        if outcomes.empty:
            return cls(0, None, None, None, None)
        live = float(outcomes["abs_error"].mean())
        persistence = float(outcomes["persistence_abs_error"].mean())
        # The outcomes are in target time order (OUTCOMES), as the independence test needs them.
        banded = outcomes[outcomes["inside_interval"].notna()]
        intervals = None
        if len(banded):
            intervals = interval_figures(
                banded["realised_price"].tolist(),
                banded["lower_price"].tolist(),
                banded["upper_price"].tolist(),
                banded["inside_interval"].astype(bool).tolist(),
                [None if pd.isna(x) else float(x) for x in banded["interval_level"]],
                [None if pd.isna(x) else str(x) for x in banded["volatility_regime"]],
                nominal_coverage,
            )
        return cls(
            n=len(outcomes),
            live_mae=live,
            persistence_mae=persistence,
            skill_vs_persistence=1.0 - live / persistence if persistence else None,
            interval_coverage=float(banded["inside_interval"].astype(float).mean()) if len(banded) else None,
            intervals=intervals,
        )

    def line(self) -> str:
        if not self.n:
            return "0 outcomes (no prediction of this target has reached its target time in the range)"
        parts = [
            f"{self.n:,} outcomes",
            f"live MAE {self.live_mae:.6g}",
            f"persistence MAE {self.persistence_mae:.6g}",
        ]
        parts.append(
            "skill n/a" if self.skill_vs_persistence is None else f"skill {self.skill_vs_persistence:+.4%}"
        )
        if self.interval_coverage is not None:
            parts.append(f"interval coverage {self.interval_coverage:.2%}")
        if self.intervals is not None:
            figures = self.intervals
            if figures.coverage_by_regime:
                by_regime = " ".join(f"{r} {c:.2%}" for r, c in figures.coverage_by_regime.items())
                parts.append(f"by regime {by_regime}")
            parts.append(f"interval score {figures.interval_score:.6g}")
            parts.append(f"Kupiec p {figures.kupiec_pvalue:.3g}")
            parts.append(f"Christoffersen p {figures.christoffersen_pvalue:.3g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ReportData:
    since: datetime
    until: datetime
    candles: pd.DataFrame  # candles that close in [since, until]: window_start, window_end, close, gap, ...
    outcomes: pd.DataFrame  # OUTCOMES columns, in target time order
    reference: pd.DataFrame  # model inputs of the window before `since` (one row per candle, NaN: unusable)
    recent: pd.DataFrame  # model inputs of [since, until)
    newest_outcome: datetime | None = None  # when the range has none: the target time of the newest one
    nominal_coverage: float = DEFAULT_COVERAGE  # what the coverage test compares with

    @property
    def summary(self) -> OutcomeSummary:
        return OutcomeSummary.of(self.outcomes, self.nominal_coverage)


def newest_candle_end(engine: Engine, pair: str, interval_s: int) -> datetime | None:
    query = select(func.max(candles.c.window_end)).where(
        *on_market(candles, pair), candles.c.interval_s == interval_s
    )
    with engine.connect() as conn:
        newest: datetime | None = conn.execute(query).scalar()
    return newest


def newest_outcome_time(engine: Engine, pair: str, interval_s: int, horizon_s: int) -> datetime | None:
    query = text(
        "SELECT max(target_time) FROM prediction_outcomes WHERE exchange = :exchange AND pair = :pair"
        " AND interval_s = :interval_s AND horizon_s = :horizon_s"
    )
    with engine.connect() as conn:
        newest: datetime | None = conn.execute(
            query, {**market_params(pair), "interval_s": interval_s, "horizon_s": horizon_s}
        ).scalar()
    return newest


def read_candles_between(
    engine: Engine, pair: str, interval_s: int, start: datetime, end: datetime
) -> pd.DataFrame:
    """Candles whose window starts in [start, end), in time order, gap candles included."""
    query = (
        select(candles)
        .where(
            *on_market(candles, pair),
            candles.c.interval_s == interval_s,
            candles.c.window_start >= start,
            candles.c.window_start < end,
        )
        .order_by(candles.c.window_start)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def read_outcomes(
    engine: Engine, pair: str, interval_s: int, horizon_s: int, since: datetime, until: datetime
) -> pd.DataFrame:
    """Ledger rows of one target whose target time is in [since, until], in target time order."""
    params = {**market_params(pair), "interval_s": interval_s, "horizon_s": horizon_s}
    params |= {"since": since, "until": until}
    with engine.connect() as conn:
        frame = pd.read_sql(OUTCOMES.bindparams(**params), conn)
    frame["model_version"] = frame["model_version"].astype(str)
    return frame


def input_windows(
    candles_: pd.DataFrame,
    pair: str,
    interval_s: int,
    lags: int,
    since: datetime,
    until: datetime,
    config: IndicatorConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model inputs (return lags and scale-free indicators, as training builds them) of the candles that
    start in [since - (until - since), since) and in [since, until)."""
    config = config or IndicatorConfig()
    empty = pd.DataFrame()
    if candles_.empty:
        return empty, empty
    values, _ = indicator_values(candles_, pair, interval_s, None, config)
    features, _ = feature_frame(candles_, interval_s, lags, values, config)
    starts = features.index
    reference = features[(starts >= since - (until - since)) & (starts < since)]
    recent = features[(starts >= since) & (starts < until)]
    return reference.replace([np.inf, -np.inf], np.nan), recent.replace([np.inf, -np.inf], np.nan)


def load_report(
    engine: Engine,
    pair: str,
    interval_s: int,
    horizon_s: int,
    hours: float,
    lags: int,
    progress: Callable[[str], None] = lambda _: None,
    until: datetime | None = None,
    nominal_coverage: float = DEFAULT_COVERAGE,
) -> ReportData | None:
    """Everything the report draws over the `hours` before `until` (default: the newest candle's end);
    None when the pair has no candles at this interval."""
    until = until or newest_candle_end(engine, pair, interval_s)
    if until is None:
        return None
    span = timedelta(hours=hours)
    since = until - span
    progress(f"reading candles and outcomes of {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC")
    history = read_candles_between(
        engine, pair, interval_s, since - span - WARM_UP_CANDLES * timedelta(seconds=interval_s), until
    )
    outcomes = read_outcomes(engine, pair, interval_s, horizon_s, since, until)
    progress(f"computing model inputs of {len(history):,} candles for drift")
    reference, recent = input_windows(history, pair, interval_s, lags, since, until)
    in_range = history[history["window_end"] >= since].reset_index(drop=True)
    newest = None if len(outcomes) else newest_outcome_time(engine, pair, interval_s, horizon_s)
    return ReportData(
        since=since,
        until=until,
        candles=in_range,
        outcomes=outcomes,
        reference=reference,
        recent=recent,
        newest_outcome=newest,
        nominal_coverage=nominal_coverage,
    )


MIN_DRIFT_ROWS = 30


def feature_psi(
    reference: pd.DataFrame, recent: pd.DataFrame, bins: int = 10
) -> tuple[dict[str, float], str | None]:
    """PSI of each model input between the two windows (`cryptopredict.ml.drift.psi` on the usable rows),
    and why there are none when too few rows are usable."""
    values: dict[str, float] = {}
    for name in recent.columns.intersection(reference.columns):
        before, after = reference[name].dropna().to_numpy(), recent[name].dropna().to_numpy()
        if len(before) >= MIN_DRIFT_ROWS and len(after) >= MIN_DRIFT_ROWS:
            values[name] = float(psi(before, after, bins=bins))
    if not values:
        return {}, (
            f"drift chart skipped: fewer than {MIN_DRIFT_ROWS} usable rows in the reference window "
            f"({len(reference)} candles) or the recent one ({len(recent)})"
        )
    return values, None
