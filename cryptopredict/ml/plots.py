"""Evaluation figures logged with training runs: predictions against actual prices, residuals, feature
importances.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never through pyplot: pyplot keeps
every figure in a global registry until closed, which leaks memory in long-lived workers and is not
thread-safe. Series longer than `MAX_DRAWN_POINTS` are downsampled for drawing (the title says so),
keeping each bucket's minimum and maximum so spikes stay visible; histograms always use every point.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_DRAWN_POINTS = 5_000
TOP_FEATURES = 25


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _envelope_indices(values: np.ndarray, max_points: int = MAX_DRAWN_POINTS) -> np.ndarray:
    """Indices of the minimum and maximum of each of max_points / 2 buckets (all indices when short
    enough), so a downsampled line keeps the extremes a plain stride would skip."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    edges = np.linspace(0, n, max_points // 2 + 1).astype(int)
    picked = []
    for start, stop in itertools.pairwise(edges):
        finite = np.flatnonzero(np.isfinite(values[start:stop]))
        if finite.size == 0:
            picked.append(start)
            continue
        segment = values[start:stop][finite]
        picked += [start + finite[np.argmin(segment)], start + finite[np.argmax(segment)]]
    return np.unique(np.asarray(picked))


def _title(title: str, drawn: int, total: int) -> str:
    if drawn == total:
        return title
    return f"{title}\n(downsampled for drawing: {drawn:,} of {total:,} points)"


def _arrays(*series: Any) -> list[np.ndarray]:
    arrays = [np.asarray(s) for s in series]
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(f"series lengths differ: {[len(a) for a in arrays]}")
    return arrays


def plot_predictions(
    times: Any,
    actual_price: Any,
    predicted_price: Any,
    lower_price: Any,
    upper_price: Any,
    title: str,
    persistence_price: Any | None = None,
) -> Figure:
    """Actual against predicted price with the conformal interval as a band; the persistence forecast
    (the last close) can be drawn as the baseline to beat."""
    series = [times, actual_price, predicted_price, lower_price, upper_price]
    if persistence_price is not None:
        series.append(persistence_price)
    t, actual, predicted, lower, upper, *baseline = _arrays(*series)
    keep = _envelope_indices(actual.astype(float))
    figure = _figure(12, 5)
    ax = figure.add_subplot()
    ax.fill_between(t[keep], lower[keep], upper[keep], color="tab:blue", alpha=0.2, label="interval")
    ax.plot(t[keep], actual[keep], color="black", linewidth=1, label="actual")
    ax.plot(t[keep], predicted[keep], color="tab:blue", linewidth=1, label="predicted")
    if baseline:
        ax.plot(t[keep], baseline[0][keep], color="gray", linestyle="--", linewidth=1, label="persistence")
    ax.set_title(_title(title, len(keep), len(t)))
    ax.set_ylabel("price")
    ax.legend(loc="upper left")
    return figure


def plot_residuals(times: Any, residuals: Any, title: str) -> Figure:
    """Residuals over time (drift, volatility regimes) next to their distribution (bias, fat tails)."""
    t, values = _arrays(times, residuals)
    values = values.astype(float)
    keep = _envelope_indices(values)
    figure = _figure(12, 4)
    over_time, histogram = figure.subplots(1, 2, width_ratios=[3, 1])
    over_time.plot(t[keep], values[keep], color="tab:red", linewidth=0.8)
    over_time.axhline(0.0, color="black", linewidth=0.8)
    over_time.set_title(_title(title, len(keep), len(t)))
    over_time.set_ylabel("residual")
    finite = values[np.isfinite(values)]
    histogram.hist(finite, bins=min(100, max(10, int(np.sqrt(finite.size)))), orientation="horizontal")
    histogram.axhline(0.0, color="black", linewidth=0.8)
    histogram.set_title(f"distribution ({finite.size:,} points)")
    return figure


def plot_feature_importance(names: Sequence[str], importances: Any, title: str) -> Figure:
    """The `TOP_FEATURES` largest importances by magnitude as horizontal bars, largest on top; signed
    values (linear coefficients) keep their sign."""
    labels, values = _arrays(list(names), importances)
    values = values.astype(float)
    order = np.argsort(-np.abs(values), kind="stable")[:TOP_FEATURES]
    figure = _figure(8, max(3.0, 0.3 * len(order) + 1.5))
    ax = figure.add_subplot()
    # Numeric positions: on a categorical axis, duplicate names would share one bar.
    positions = np.arange(len(order))
    ax.barh(positions, values[order][::-1], color="tab:green")
    ax.set_yticks(positions, [str(label) for label in labels[order][::-1]])
    shown = title if len(order) == len(values) else f"{title} (top {len(order)} of {len(values)})"
    ax.set_title(shown)
    ax.set_xlabel("importance")
    return figure


def plot_coverage_by_regime(figures: dict[str, float], nominal: float, title: str) -> Figure:
    """Coverage of the adaptive and the constant-width interval in each third of volatility, against
    the nominal level (`figures` as ml.adaptive.interval_report gives them; an empty regime is skipped)."""
    regimes = ["calm", "mid", "wild", "overall"]
    figure = _figure(7, 4)
    ax = figure.add_subplot()
    positions = np.arange(len(regimes))
    for offset, (kind, prefix, color) in zip(
        (-0.2, 0.2), (("adaptive", "", "tab:blue"), ("constant width", "constant_", "tab:gray")), strict=True
    ):
        values = [figures.get(f"{prefix}coverage_{regime}", np.nan) for regime in regimes]
        ax.bar(positions + offset, np.nan_to_num(values), width=0.4, label=kind, color=color)
    ax.axhline(nominal, color="tab:red", linestyle="--", label=f"nominal {nominal:.0%}")
    ax.set_xticks(positions, regimes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of outcomes inside")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return figure


def save_png(fig: Figure, path: str | Path) -> Path:
    """Writes the figure as PNG (parent folders created) and returns the path, e.g. for mlflow.log_artifact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=100)
    return target


# PSI rules of thumb: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one.
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25
DRIFT_MAX_HISTOGRAMS = 24
DRIFT_COLUMNS = 4


def _time_values(times: Any) -> np.ndarray:
    """Times as naive UTC datetime64 when they are datetimes (a tz-aware pandas column would become an
    object array of Timestamps, which sorts and subtracts slowly); anything else unchanged."""
    if isinstance(times, pd.Series | pd.Index) and isinstance(times.dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(times).tz_convert(None).to_numpy()
    values = np.asarray(times)
    if values.dtype == object and values.size and hasattr(values[0], "tzinfo"):
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_convert(None).to_numpy()
    return values


def _version_runs(times: np.ndarray, versions: np.ndarray) -> list[tuple[Any, str]]:
    """(start time, version) of each run of one version in time order, one row per time (the last
    written wins when two versions share a time): a promotion or a rollback starts a new run."""
    order = np.argsort(times, kind="stable")
    t, v = times[order], versions[order]
    last_of_time = np.append(t[1:] != t[:-1], True)
    t, v = t[last_of_time], v[last_of_time]
    starts = np.flatnonzero(np.append(True, v[1:] != v[:-1]))
    return [(t[i], str(v[i])) for i in starts]


def _broken_line(times: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Inserts a NaN point wherever consecutive times are more than 3 typical steps apart, so the line of
    a version that served twice (or a pause in predictions) is not drawn straight across the hole."""
    if len(times) < 3:
        return (times, *values)
    steps = np.diff(times)
    holes = np.flatnonzero(steps > 3 * np.median(steps)) + 1
    if holes.size == 0:
        return (times, *values)
    filled_times = np.insert(times, holes, times[holes - 1] + steps[holes - 1] / 2)
    return (filled_times, *(np.insert(v.astype(float), holes, np.nan) for v in values))


def _mark_runs(ax: Any, runs: list[tuple[Any, str]], label: bool) -> None:
    for start, version in runs[1:]:
        ax.axvline(start, color="dimgray", linestyle=":", linewidth=1)
        if label:
            ax.annotate(
                f"v{version}",
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="dimgray",
            )


def plot_versioned_predictions(
    price_times: Any,
    price: Any,
    target_times: Any,
    predicted_price: Any,
    lower_price: Any,
    upper_price: Any,
    versions: Sequence[str],
    title: str,
) -> Figure:
    """The realised price (a candle's close at its end) with each prediction at its target time and its
    interval band, one color per model version; a dotted vertical line marks where the serving version
    changed (a promotion or a rollback). Missing bounds (NaN) leave the band out."""
    pt, realised = _arrays(_time_values(price_times), price)
    tt, predicted, lower, upper, version = _arrays(
        _time_values(target_times), predicted_price, lower_price, upper_price, list(versions)
    )
    figure = _figure(12, 5)
    ax = figure.add_subplot()
    keep = _envelope_indices(realised.astype(float))
    ax.plot(pt[keep], realised[keep], color="black", linewidth=1, label="realised")
    drawn = len(keep)
    colors = itertools.cycle(f"C{i}" for i in range(10))
    for name in dict.fromkeys(version.tolist()):  # first appearance order
        rows = np.flatnonzero(version == name)
        rows = rows[np.argsort(tt[rows], kind="stable")]
        picked = rows[_envelope_indices(predicted[rows].astype(float))]
        drawn += len(picked)
        t, p, lo, hi = _broken_line(tt[picked], predicted[picked], lower[picked], upper[picked])
        color = next(colors)
        ax.fill_between(t, lo.astype(float), hi.astype(float), color=color, alpha=0.15, linewidth=0)
        ax.plot(t, p, color=color, linewidth=1, label=f"v{name}")
    runs = _version_runs(tt, version) if len(tt) else []
    _mark_runs(ax, runs, label=len(runs) <= 20)
    ax.set_title(_title(title, drawn, len(pt) + len(tt)))
    ax.set_ylabel("price")
    ax.legend(loc="upper left")
    return figure


def rolling_skill(abs_error: Any, persistence_abs_error: Any, window: int) -> dict[str, np.ndarray]:
    """Rolling MAE of the model and of persistence over the last `window` outcomes (values from half a
    window on), and skill = 1 - MAE / MAE_persistence (NaN where persistence was exact)."""
    model, baseline = (np.asarray(a, dtype=float) for a in _arrays(abs_error, persistence_abs_error))
    min_periods = max(1, window // 2)
    mae = _rolling_mean(model, window, min_periods)
    persistence_mae = _rolling_mean(baseline, window, min_periods)
    with np.errstate(divide="ignore", invalid="ignore"):
        skill = np.where(persistence_mae > 0, 1.0 - mae / persistence_mae, np.nan)
    return {"mae": mae, "persistence_mae": persistence_mae, "skill": skill}


def _rolling_mean(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    finite = np.isfinite(values)
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window))[: len(values)]
    counts = np.convolve(finite.astype(float), np.ones(window))[: len(values)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts >= min_periods, sums / counts, np.nan)


def plot_rolling_skill(
    times: Any,
    abs_error: Any,
    persistence_abs_error: Any,
    window: int,
    title: str,
    versions: Sequence[str] | None = None,
) -> Figure:
    """Top: rolling MAE of the model and of persistence (the last close) over `window` outcomes. Bottom:
    rolling skill = 1 - MAE / MAE_persistence, above zero where the model beats persistence. The overall
    skill is in the title; dotted lines mark version changes when `versions` is given."""
    t, model, baseline = _arrays(_time_values(times), abs_error, persistence_abs_error)
    order = np.argsort(t, kind="stable")
    t, model, baseline = t[order], model[order].astype(float), baseline[order].astype(float)
    rolled = rolling_skill(model, baseline, window)
    overall = 1.0 - np.nanmean(model) / np.nanmean(baseline) if np.nanmean(baseline) > 0 else np.nan
    keep = _envelope_indices(rolled["skill"])
    figure = _figure(12, 6)
    errors, skill = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    errors.plot(t[keep], rolled["mae"][keep], color="tab:blue", linewidth=1, label="model MAE")
    errors.plot(
        t[keep],
        rolled["persistence_mae"][keep],
        color="gray",
        linestyle="--",
        linewidth=1,
        label="persistence MAE",
    )
    errors.set_ylabel(f"MAE, last {window} outcomes")
    errors.set_title(
        _title(f"{title}: overall skill {overall:+.2%} over {len(t):,} outcomes", len(keep), len(t))
    )
    errors.legend(loc="upper left")
    skill.plot(t[keep], rolled["skill"][keep], color="tab:green", linewidth=1)
    skill.axhline(0.0, color="black", linewidth=0.8)
    skill.set_ylabel("skill vs persistence")
    if versions is not None:
        runs = _version_runs(t, np.asarray(list(versions))[order])
        _mark_runs(errors, runs, label=len(runs) <= 20)
        _mark_runs(skill, runs, label=False)
    return figure


def plot_drift(
    reference: Any, recent: Any, psi: dict[str, float], title: str, significant: float = PSI_SIGNIFICANT
) -> Figure:
    """Population stability of each feature between a reference window and a recent one: PSI per
    feature as bars (dashed lines at 0.1 and at `significant`), then the two distributions of the features with the
    largest PSI (`DRIFT_MAX_HISTOGRAMS` at most), on common bins of both windows' values. `reference` and
    `recent` are frames with a column per feature of `psi`."""
    names = sorted(psi, key=lambda n: (-np.nan_to_num(psi[n], nan=-1.0), n))
    shown = names[:DRIFT_MAX_HISTOGRAMS]
    rows = -(-len(shown) // DRIFT_COLUMNS)
    figure = _figure(3.2 * DRIFT_COLUMNS, 0.15 * len(names) + 1.5 + 2.2 * rows)
    grid = figure.add_gridspec(
        rows + 1, DRIFT_COLUMNS, height_ratios=[0.06 * len(names) + 0.8] + [1.0] * rows
    )
    bars = figure.add_subplot(grid[0, :])
    values = np.array([psi[n] for n in names], dtype=float)
    colors = [_psi_color(v, significant) for v in values]
    positions = np.arange(len(names))
    bars.barh(positions, values[::-1], color=colors[::-1])
    bars.set_yticks(positions, names[::-1], fontsize=7)
    for threshold in (PSI_MODERATE, significant):
        bars.axvline(threshold, color="dimgray", linestyle="--", linewidth=0.8)
    bars.set_xlabel("PSI")
    suffix = "" if len(shown) == len(names) else f" (distributions: top {len(shown)} of {len(names)})"
    bars.set_title(f"{title}{suffix}")
    for i, name in enumerate(shown):
        ax = figure.add_subplot(grid[1 + i // DRIFT_COLUMNS, i % DRIFT_COLUMNS])
        before = np.asarray(reference[name], dtype=float)
        after = np.asarray(recent[name], dtype=float)
        before, after = before[np.isfinite(before)], after[np.isfinite(after)]
        both = np.concatenate([before, after])
        if both.size:
            low, high = np.quantile(both, [0.005, 0.995])
            edges = np.linspace(low, high, 31) if high > low else np.array([low - 0.5, low + 0.5])
            ax.hist(
                np.clip(before, edges[0], edges[-1]),
                bins=edges.tolist(),
                density=True,
                color="tab:gray",
                alpha=0.5,
                label="reference",
            )
            ax.hist(
                np.clip(after, edges[0], edges[-1]),
                bins=edges.tolist(),
                density=True,
                histtype="step",
                color="tab:red",
                label="recent",
            )
        ax.set_title(f"{name}  PSI {psi[name]:.3f}", fontsize=8, color=_psi_color(psi[name], significant))
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
        if i == 0:
            ax.legend(fontsize=6, loc="upper right")
    return figure


def _psi_color(value: float, significant: float) -> str:
    if not np.isfinite(value):
        return "dimgray"
    return "tab:red" if value >= significant else "tab:orange" if value >= PSI_MODERATE else "tab:green"


def ledger_figures(
    candles: Any,
    outcomes: Any,
    title: str,
    window: int,
    drift: tuple[Any, Any, dict[str, float]] | None = None,
    psi_significant: float = PSI_SIGNIFICANT,
) -> dict[str, Figure]:
    """The report's figures by file name. `candles`: window_end and close; `outcomes`: rows of the ledger
    view (target_time, model_version, predicted_price, lower_price, upper_price, abs_error,
    persistence_abs_error); `drift`: the reference and recent model inputs and the PSI of each feature.
    Without outcomes there is no skill to draw; without `drift`, no drift figure."""
    versions = [str(v) for v in outcomes["model_version"]]
    figures = {
        "price_predictions.png": plot_versioned_predictions(
            candles["window_end"],
            candles["close"].astype(float),
            outcomes["target_time"],
            outcomes["predicted_price"].astype(float),
            outcomes["lower_price"].astype(float),
            outcomes["upper_price"].astype(float),
            versions,
            f"{title}: realised price and predictions",
        )
    }
    if len(outcomes):
        figures["rolling_skill.png"] = plot_rolling_skill(
            outcomes["target_time"],
            outcomes["abs_error"].astype(float),
            outcomes["persistence_abs_error"].astype(float),
            window,
            f"{title}: skill vs persistence",
            versions=versions,
        )
    if drift is not None and drift[2]:
        reference, recent, psi = drift
        figures["drift.png"] = plot_drift(
            reference, recent, psi, f"{title}: PSI, reference window vs recent window", psi_significant
        )
    return figures
