"""Evaluation figures: real PNG files, no pyplot state, and long series drawn quickly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptopredict.ml.plots import (
    MAX_DRAWN_POINTS,
    plot_feature_importance,
    plot_predictions,
    plot_residuals,
    save_png,
)

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def prices(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    actual = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    predicted = actual * np.exp(rng.normal(0, 0.0005, n))
    return {
        "times": pd.date_range("2026-01-01", periods=n, freq="min").to_numpy(),
        "actual_price": actual,
        "predicted_price": predicted,
        "lower_price": predicted * np.exp(-0.002),
        "upper_price": predicted * np.exp(0.002),
    }


def assert_png(path: Path, min_kb: int = 10) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_kb * 1024, len(data)


def test_figures_are_written_as_png(tmp_path: Path) -> None:
    series = prices(300)
    figure = plot_predictions(**series, title="BTC/USD 1m", persistence_price=series["actual_price"])
    assert figure.axes[0].get_title() == "BTC/USD 1m"
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "interval",
        "actual",
        "predicted",
        "persistence",
    ]
    assert_png(save_png(figure, tmp_path / "nested" / "predictions.png"))

    residuals = series["actual_price"] - series["predicted_price"]
    assert_png(save_png(plot_residuals(series["times"], residuals, "residuals"), tmp_path / "residuals.png"))

    names = [f"ret_lag_{k}" for k in range(1, 41)]
    importances = np.linspace(-1.0, 3.0, 40)
    figure = plot_feature_importance(names, importances, "importance")
    bars = figure.axes[0].get_yticklabels()
    assert len(bars) == 25 and bars[-1].get_text() == "ret_lag_40"  # the largest on top
    assert figure.axes[0].get_title() == "importance (top 25 of 40)"
    assert_png(save_png(figure, tmp_path / "importance.png"), min_kb=5)


def test_no_pyplot_figures_are_left_behind() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_residuals(np.arange(50), np.zeros(50), "zeros")
    assert plt.get_fignums() == before


def test_half_a_million_points_are_downsampled_and_fast(tmp_path: Path) -> None:
    n = 500_000
    series = prices(n, seed=1)
    spike = 123_457
    series["actual_price"][spike] *= 1.5  # a spike a plain stride would most likely skip
    started = time.perf_counter()
    figure = plot_predictions(**series, title="long")
    path = save_png(figure, tmp_path / "long.png")
    residuals = plot_residuals(series["times"], series["actual_price"] - series["predicted_price"], "res")
    save_png(residuals, tmp_path / "long_residuals.png")
    elapsed = time.perf_counter() - started
    assert elapsed < 10, elapsed
    assert_png(path)

    title = figure.axes[0].get_title()
    assert "downsampled" in title and "500,000" in title
    actual_line = figure.axes[0].get_lines()[0]
    drawn = np.asarray(actual_line.get_ydata(), dtype=float)
    assert len(drawn) <= MAX_DRAWN_POINTS and drawn.max() == series["actual_price"][spike]
    assert "500,000 points" in residuals.axes[1].get_title()  # the histogram uses every point


def test_mismatched_lengths_are_refused() -> None:
    series = prices(10)
    series["upper_price"] = series["upper_price"][:-1]
    with pytest.raises(ValueError, match="lengths differ"):
        plot_predictions(**series, title="bad")
