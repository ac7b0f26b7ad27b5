"""Drift between the data a champion was trained on and the data it sees now.

Population stability index (PSI) of one model input between a reference sample (the champion's training
window) and a recent one:

    PSI = sum over bins of (q_i - p_i) * ln(q_i / p_i)

with p the reference's and q the recent sample's share of each bin. The bins are deciles of the
reference (`bins` quantiles, taken at reference values, so PSI does not change under a monotone
transform of the feature), right-closed, and the outer two open-ended: a recent value beyond the
reference's range counts in the outermost bin. Tied quantiles merge (a feature that is often exactly 0,
like a news count, gets fewer, wider bins instead of empty ones). An empty bin's share is floored at
`eps` (1e-4), so a bin the other sample fills adds a large but finite term. NaN and infinite values are
left out of both samples before binning: a feature's missing values are the dataset's business (rows
with an unusable input are dropped before training), not a distribution shift.

Conventional reading: below 0.1 no real change, 0.1 to 0.25 a moderate shift, above 0.25 a significant
one. For a normal feature whose mean moves by d standard deviations PSI is about d^2 (0.25 at half a
standard deviation); doubling its spread gives about 0.5.

Sampling alone gives two samples of one distribution a PSI of about (bins - 1) * (1/n_ref + 1/n_recent)
(0.06 for two windows of 300 independent rows). Model inputs are not independent rows: a 60-candle
moving average relative to the close has a lag-1 autocorrelation near 0.97, so a day of 1-minute candles
holds about 20 independent values of it, and on a plain random walk its PSI between two consecutive days
is often above 0.5. Each feature therefore gets a noise floor, the same formula with effective sample
sizes n (1 - rho) / (1 + rho) (rho: the lag-1 autocorrelation in each window, floored at 0), and it
breaches only when its PSI exceeds the threshold plus its floor. Returns (rho near 0) keep a floor of a
few hundredths; slow indicators need a correspondingly larger shift. The lag-1 estimate is conservative
for very smooth inputs (the MACD signal line's floor is near PSI's maximum, so it practically never
breaches alone): a windowed integrated autocorrelation time gives lower floors but, tried on random
walks, false breaches too, and a needless retrain every hour costs more than a drift that only the
smoothest input shows. Regime changes move the returns, ATR and band width, and the live skill check
sees a champion that has stopped working whatever moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.features.model_inputs import feature_frame
from cryptopredict.ml.dataset import FEATURE_TIME
from cryptopredict.ml.live import LiveFigures
from cryptopredict.models.drift import (
    DriftReport,
    DriftTarget,
    DriftThresholds,
    DriftWindow,
    FeatureDrift,
    LiveSkill,
)

EPS = 1e-4


def finite(values: np.ndarray | pd.Series | Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    kept: np.ndarray = array[np.isfinite(array)]
    return kept


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """The inner bin edges: the reference's distinct k/bins quantiles (k = 1 .. bins - 1), each the
    smallest reference value with at least k/bins of the sample at or below it (in integers: no
    floating-point level like 0.30000000000000004 moves an edge by one value)."""
    ordered = np.sort(reference)
    n = len(ordered)
    ranks = [-(-n * k // bins) - 1 for k in range(1, bins)]  # ceil(n k / bins) - 1
    return np.unique(ordered[ranks])


def bin_shares(values: np.ndarray, edges: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Share of `values` in each right-closed bin (-inf, e_1], (e_1, e_2], ..., (e_k, inf); at least eps."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return np.maximum(counts / len(values), eps)


def effective_size(values: np.ndarray) -> float:
    """n (1 - rho) / (1 + rho) with rho the lag-1 autocorrelation clipped to [0, 0.999]; at least 2."""
    n = len(values)
    if n < 3:
        return float(max(n, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = float(np.corrcoef(values[:-1], values[1:])[0, 1])
    rho = min(max(rho, 0.0), 0.999) if np.isfinite(rho) else 0.0
    return max(2.0, n * (1 - rho) / (1 + rho))


def noise_floor(
    reference: np.ndarray | pd.Series | Sequence[float],
    recent: np.ndarray | pd.Series | Sequence[float],
    bins: int = 10,
) -> float:
    """The PSI two windows of one (autocorrelated) process show by chance: (k - 1) (1/n_ref + 1/n_recent)
    with k the bins the reference really has (tied quantiles merge) and n the effective sizes."""
    ref, new = finite(reference), finite(recent)
    if not len(ref) or not len(new):
        raise ValueError("the noise floor needs finite values in both samples")
    k = len(quantile_edges(ref, bins)) + 1
    return (k - 1) * (1 / effective_size(ref) + 1 / effective_size(new))


def psi(
    reference: np.ndarray | pd.Series | Sequence[float],
    recent: np.ndarray | pd.Series | Sequence[float],
    bins: int = 10,
    eps: float = EPS,
) -> float:
    """Population stability index of `recent` against `reference` (module docstring). NaN and infinite
    values are excluded; raises ValueError when either sample has no finite value."""
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    ref, new = finite(reference), finite(recent)
    if not len(ref) or not len(new):
        raise ValueError(f"PSI needs finite values in both samples ({len(ref)} reference, {len(new)} recent)")
    edges = quantile_edges(ref, bins)
    p, q = bin_shares(ref, edges, eps), bin_shares(new, edges, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def model_input_rows(
    candles: pd.DataFrame,
    interval_s: int,
    lags: int,
    indicators: pd.DataFrame,
    config: IndicatorConfig,
    sentiment: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The model inputs of every usable candle (the same code as the training dataset and the live
    path: cryptopredict.features.model_inputs), with FEATURE_TIME; and the input names. A row is usable
    when its candle exists and every input is known, as in the dataset; no target is needed, so the
    newest candles count too (they are what the champion is predicting from now)."""
    features, grid = feature_frame(candles, interval_s, lags, indicators, config, sentiment)
    names = list(features.columns)
    keep = ~grid["missing"] & features.notna().all(axis=1)
    rows = features[keep].copy()
    rows[FEATURE_TIME] = rows.index
    return rows.reset_index(drop=True), names


def between(rows: pd.DataFrame, after: datetime | None, upto: datetime | None) -> pd.DataFrame:
    """Rows with after < FEATURE_TIME <= upto (None: unbounded on that side)."""
    times = pd.to_datetime(rows[FEATURE_TIME], utc=True)
    mask = pd.Series(True, index=rows.index)
    if after is not None:
        mask &= times > pd.Timestamp(after)
    if upto is not None:
        mask &= times <= pd.Timestamp(upto)
    return rows[mask]


def live_skill(
    figures: LiveFigures | None, thresholds: DriftThresholds, persistence_champion: bool = False
) -> tuple[LiveSkill | None, list[str]]:
    """The champion's ledger figures judged against the thresholds; (skill, breach reasons)."""
    if figures is None:
        return None, []
    skill = figures.skill_vs_persistence
    evaluated = figures.n >= thresholds.min_outcomes and skill is not None and not persistence_champion
    breached = evaluated and skill is not None and skill < thresholds.skill
    live = LiveSkill(
        model_version=figures.model_version,
        n=figures.n,
        live_mae=figures.live_mae,
        persistence_mae=figures.persistence_mae,
        skill_vs_persistence=skill,
        evaluated=evaluated,
        breached=breached,
    )
    reasons = []
    if breached:
        assert skill is not None
        reasons.append(
            f"live skill vs persistence of v{figures.model_version} is {skill:+.4f} (below "
            f"{thresholds.skill:g}) over {figures.n} outcomes: MAE {figures.live_mae:.4g} vs "
            f"persistence {figures.persistence_mae:.4g}"
        )
    return live, reasons


def _window(source: str, rows: pd.DataFrame, start: datetime | None, end: datetime | None) -> DriftWindow:
    if start is None and len(rows):
        start = pd.Timestamp(rows[FEATURE_TIME].iloc[0]).to_pydatetime()
    if end is None and len(rows):
        end = pd.Timestamp(rows[FEATURE_TIME].iloc[-1]).to_pydatetime()
    return DriftWindow(source=source, start=start, end=end, rows=len(rows))


def drift_report(
    reference_frame: pd.DataFrame,
    recent_frame: pd.DataFrame,
    features: Sequence[str],
    live_figures: LiveFigures | None,
    thresholds: DriftThresholds,
    *,
    target: DriftTarget,
    checked_at: datetime,
    reference_source: str = "training",
    reference_span: tuple[datetime | None, datetime | None] = (None, None),
    recent_span: tuple[datetime | None, datetime | None] = (None, None),
    notes: Sequence[str] = (),
) -> DriftReport:
    """PSI of each of `features` between the two frames (rows of model inputs with FEATURE_TIME) and
    the champion's live figures; every PSI above `thresholds.psi` plus the feature's noise floor (module
    docstring), and a live skill below
    `thresholds.skill` (with at least `min_outcomes` outcomes) is a breach with its reason. A feature
    with fewer than `min_rows` finite values in either window is not compared, and said so in the
    notes. The spans default to the frames' first and last rows."""
    compared: list[FeatureDrift] = []
    skipped: list[str] = []
    for name in features:
        if name not in reference_frame or name not in recent_frame:
            skipped.append(name)
            continue
        ref, new = finite(reference_frame[name]), finite(recent_frame[name])
        value = floor = None
        if min(len(ref), len(new)) >= thresholds.min_rows:
            value, floor = psi(ref, new, thresholds.bins), noise_floor(ref, new, thresholds.bins)
        compared.append(
            FeatureDrift(
                feature=name,
                psi=value,
                noise_floor=floor,
                reference_rows=len(ref),
                recent_rows=len(new),
                breached=value is not None and floor is not None and value > thresholds.psi + floor,
            )
        )
    compared.sort(key=lambda f: (f.psi is None, -(f.psi or 0.0), f.feature))
    reference = _window(reference_source, reference_frame, *reference_span)
    recent = _window("recent", recent_frame, *recent_span)
    breaches = [
        f"{f.feature}: PSI {f.psi:.3g} > {thresholds.psi:g} + noise floor {f.noise_floor:.2g} "
        f"({reference_source} window {f.reference_rows} rows, recent {f.recent_rows})"
        for f in compared
        if f.breached and f.psi is not None and f.noise_floor is not None
    ]
    all_notes = list(notes)
    if skipped:
        all_notes.append(f"not among the model inputs: {', '.join(skipped)}")
    too_few = [f.feature for f in compared if f.psi is None]
    if too_few:
        all_notes.append(
            f"not compared, fewer than {thresholds.min_rows} values in a window "
            f"(reference {reference.rows} rows, recent {recent.rows}): {', '.join(too_few)}"
        )
    persistence = target.model_kind == "persistence"
    live, live_breaches = live_skill(live_figures, thresholds, persistence_champion=persistence)
    if live is None:
        all_notes.append("no outcomes of the champion in the ledger for the recent window")
    elif persistence:
        all_notes.append("the champion is persistence: its live skill is 0 by construction, not judged")
    elif not live.evaluated:
        all_notes.append(f"live skill not judged: {live.n} outcomes, fewer than {thresholds.min_outcomes}")
    return DriftReport(
        target=target,
        checked_at=checked_at,
        reference=reference,
        recent=recent,
        thresholds=thresholds,
        features=compared,
        live=live,
        breaches=[*breaches, *live_breaches],
        notes=all_notes,
    )
