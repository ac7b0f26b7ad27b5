"""The report's charts: price with predictions per model version, rolling skill vs persistence, drift.

Not pixel tests: each chart is a real PNG, with the axes and lines the data calls for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptopredict.ml.plots import (
    DRIFT_MAX_HISTOGRAMS,
    ledger_figures,
    plot_drift,
    plot_rolling_skill,
    plot_versioned_predictions,
    rolling_skill,
    save_png,
)

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_kb: int = 10) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_kb * 1024, len(data)


def ledger(n: int = 240, seed: int = 0, versions: tuple[str, ...] = ("4", "5", "4")) -> pd.DataFrame:
    """Rows shaped like the `prediction_outcomes` view: tz-aware target times, one version per run."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC")
    realised = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    last = np.concatenate([[100.0], realised[:-1]])
    predicted = last * np.exp(rng.normal(0, 0.0005, n))
    runs = np.array_split(np.arange(n), len(versions))
    return pd.DataFrame(
        {
            "target_time": times,
            "model_version": np.concatenate([[v] * len(r) for v, r in zip(versions, runs, strict=True)]),
            "last_price": last,
            "predicted_price": predicted,
            "lower_price": predicted * np.exp(-0.002),
            "upper_price": predicted * np.exp(0.002),
            "realised_price": realised,
            "abs_error": np.abs(predicted - realised),
            "persistence_abs_error": np.abs(last - realised),
        }
    )


def candles_of(outcomes: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"window_end": outcomes["target_time"], "close": outcomes["realised_price"]})


def test_price_chart_draws_a_line_and_band_per_version_and_marks_each_change(tmp_path: Path) -> None:
    rows = ledger()
    figure = plot_versioned_predictions(
        rows["target_time"],
        rows["realised_price"],
        rows["target_time"],
        rows["predicted_price"],
        rows["lower_price"],
        rows["upper_price"],
        list(rows["model_version"]),
        "BTC/USD 1m h1",
    )
    (ax,) = figure.axes
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["realised", "v4", "v5"]
    # realised + one line per version + a dotted marker at each change (4 -> 5, the rollback 5 -> 4)
    assert len(ax.get_lines()) == 1 + 2 + 2
    assert len(ax.collections) == 2  # one interval band per version
    v4 = np.asarray(ax.get_lines()[1].get_ydata(), dtype=float)
    assert np.isnan(v4).sum() == 1  # not drawn straight across v5's time
    assert ax.get_title() == "BTC/USD 1m h1"
    assert_png(save_png(figure, tmp_path / "price.png"))


def test_price_chart_without_predictions_or_bounds() -> None:
    rows = ledger(60, versions=("7",))
    empty = rows.iloc[:0]
    figure = plot_versioned_predictions(
        rows["target_time"], rows["realised_price"], empty["target_time"], [], [], [], [], "no outcomes"
    )
    assert len(figure.axes[0].get_lines()) == 1
    no_bounds = plot_versioned_predictions(
        rows["target_time"],
        rows["realised_price"],
        rows["target_time"],
        rows["predicted_price"],
        np.full(len(rows), np.nan),
        np.full(len(rows), np.nan),
        list(rows["model_version"]),
        "persistence without interval",
    )
    assert len(no_bounds.axes[0].get_lines()) == 2  # realised, v7; no change to mark


def test_rolling_skill_is_one_minus_the_ratio_of_rolling_maes() -> None:
    model = np.array([1.0, 1.0, 1.0, 3.0, 3.0, 3.0])
    persistence = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 0.0])
    rolled = rolling_skill(model, persistence, window=2)
    np.testing.assert_allclose(rolled["mae"], [1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(rolled["persistence_mae"], [2.0, 2.0, 2.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(rolled["skill"], [0.5, 0.5, 0.5, 0.0, -0.5, -2.0])
    late = rolling_skill(model, persistence, window=4)
    assert np.isnan(late["mae"][0]) and late["mae"][1] == 1.0  # from half a window on
    exact = rolling_skill([1.0, 1.0], [0.0, 0.0], window=1)
    assert np.isnan(exact["skill"]).all()  # persistence exact: no ratio, not infinity


def test_skill_chart_has_maes_on_top_and_skill_below(tmp_path: Path) -> None:
    rows = ledger()
    figure = plot_rolling_skill(
        rows["target_time"],
        rows["abs_error"],
        rows["persistence_abs_error"],
        30,
        "BTC/USD 1m h1",
        versions=list(rows["model_version"]),
    )
    errors, skill = figure.axes
    assert len(errors.get_lines()) == 2 + 2  # model MAE, persistence MAE, two version changes
    assert len(skill.get_lines()) == 2 + 2  # skill, the zero line, two version changes
    overall = 1 - rows["abs_error"].mean() / rows["persistence_abs_error"].mean()
    assert f"overall skill {overall:+.2%} over 240 outcomes" in errors.get_title()
    drawn = np.asarray(skill.get_lines()[0].get_ydata(), dtype=float)
    expected = rolling_skill(rows["abs_error"], rows["persistence_abs_error"], 30)["skill"]
    np.testing.assert_allclose(drawn, expected)
    assert_png(save_png(figure, tmp_path / "skill.png"))

    plain = plot_rolling_skill(np.arange(50), np.ones(50), np.full(50, 2.0), 10, "numbers")
    assert [len(ax.get_lines()) for ax in plain.axes] == [2, 2]


def frames(n_features: int, rows: int = 400, seed: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(n_features)]
    reference = pd.DataFrame({n: rng.normal(0, 1, rows) for n in names})
    recent = pd.DataFrame({n: rng.normal(i / n_features, 1, rows) for i, n in enumerate(names)})
    recent.iloc[::7, 0] = np.nan  # unusable rows are left out
    return reference, recent


def test_drift_chart_has_psi_bars_and_a_histogram_per_feature(tmp_path: Path) -> None:
    reference, recent = frames(5)
    psi = {"f0": 0.01, "f1": 0.3, "f2": 0.12, "f3": 0.05, "f4": 0.02}
    figure = plot_drift(reference, recent, psi, "BTC/USD drift")
    bars, *histograms = figure.axes
    assert len(histograms) == 5
    assert len(bars.patches) == 5 and len(bars.get_lines()) == 2  # thresholds 0.1 and 0.25
    assert [label.get_text() for label in bars.get_yticklabels()][-1] == "f1"  # the largest on top
    assert histograms[0].get_title() == "f1  PSI 0.300"
    assert all(len(ax.patches) == 30 + 1 for ax in histograms)  # 30 common bins; the recent one a step line
    assert_png(save_png(figure, tmp_path / "drift.png"))


def test_drift_chart_shows_the_largest_shifts_when_there_are_many_features() -> None:
    reference, recent = frames(30, rows=100)
    psi = {f"f{i}": i / 100 for i in range(30)}
    figure = plot_drift(reference, recent, psi, "many", significant=0.2)
    assert len(figure.axes) == 1 + DRIFT_MAX_HISTOGRAMS
    assert figure.axes[0].get_title() == f"many (distributions: top {DRIFT_MAX_HISTOGRAMS} of 30)"
    assert len(figure.axes[0].patches) == 30
    assert figure.axes[0].get_lines()[1].get_xdata()[0] == 0.2


def test_report_figures_depend_on_what_there_is() -> None:
    rows = ledger(120)
    reference, recent = frames(3)
    drift = (reference, recent, {"f0": 0.1, "f1": 0.2, "f2": 0.3})
    assert set(ledger_figures(candles_of(rows), rows, "t", 20, drift)) == {
        "price_predictions.png",
        "rolling_skill.png",
        "drift.png",
    }
    assert set(ledger_figures(candles_of(rows), rows.iloc[:0], "t", 20, None)) == {"price_predictions.png"}


def test_no_pyplot_figures_are_left_behind() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rows = ledger(60)
    ledger_figures(candles_of(rows), rows, "t", 10, (*frames(2), {"f0": 0.0, "f1": 1.0}))
    assert plt.get_fignums() == before
