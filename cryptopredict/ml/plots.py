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


def save_png(fig: Figure, path: str | Path) -> Path:
    """Writes the figure as PNG (parent folders created) and returns the path, e.g. for mlflow.log_artifact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=100)
    return target
