"""Volatility forecasts and intervals that adapt, on real Kraken BTC/USD hours (walk-forward).

Data: ../shared/data/kraken/XBTUSD_60.csv from 2018 on (hours without trades carry the last close: no
move). The test period is the last three years, in blocks of 30 days; before each block everything is
refitted on what was known then (nothing of the block or its outcomes is used):

- price, horizon 1 hour: the persistence forecast (no change), whose residual is the return itself.
  Two 80% intervals from the same calibration window (the last 90 days of known outcomes):
  * constant: split-conformal offsets of the returns, one width for every hour (today's method);
  * adaptive: returns divided by a HAR forecast of the next hour's volatility (fitted on the history
    before the calibration window), conformal offsets per regime (Mondrian), regimes by the trailing
    24-hour volatility with cut points fixed on the calibration window.
  Reported: coverage overall and in each third of the test hours by trailing 24-hour volatility (calm /
  mid / wild), the interval (Winkler) score as a ratio to the constant interval's, and the p-values of
  Kupiec's coverage test and Christoffersen's independence test.
- volatility, horizon 24 hours: the mean absolute hourly log return of the next 24 hours. HAR (logs of
  the trailing 1, 6, 24 and 168-hour volatilities, least squares) against the naive trailing 24-hour
  mean, and a constant (the mean of the history): MAE of log volatility (a loss for variance forecasts
  that counts a forecast twice too high as badly as one twice too low), skill = 1 - MAE / MAE_naive, and
  the Diebold-Mariano p-value against the naive forecast (24-step overlapping errors).

Usage: .venv/bin/python bench/forecast.py [--quick]   (no services needed; --quick: the last year only)
Ends with one JSON line: {"coverage_calm", "coverage_mid", "coverage_wild", "coverage_overall",
"interval_score_vs_constant", "vol_skill_vs_naive", "vol_dm_pvalue"} and a few more figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.ml.backtest import (  # noqa: E402
    BLOCK_H,
    CALIBRATION_H,
    COVERAGE,
    VOL_HORIZON_H,
    interval_figures,
    load_hours,
    volatility_figures,
    walk_forward,
)

DATA = ROOT.parent / "shared" / "data" / "kraken" / "XBTUSD_60.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"bench/forecast.py needs {DATA} (the shared data beside the project)")
    close = load_hours(DATA, "2018-01-01")
    test_start = close.index[-1] - pd.Timedelta(days=365 if args.quick else 3 * 365)
    price, vol = walk_forward(close, test_start)
    intervals, volatility = interval_figures(price), volatility_figures(vol)
    c, a = intervals["const"], intervals["adaptive"]
    ratio = a["winkler"] / c["winkler"]
    rows = "\n".join(
        f"| {name} | {f['overall']:.3f} | {f['calm']:.3f} | {f['mid']:.3f} | {f['wild']:.3f} | "
        f"{f['mean_width'] * 100:.3f}% | {f['winkler'] * 100:.3f} | {f['kupiec_p']:.3g} | {f['christoffersen_p']:.3g} |"
        for name, f in (("constant width (today)", c), ("volatility-scaled, Mondrian by regime", a))
    )
    body = f"""
Kraken XBTUSD hourly, {close.index[0]:%Y-%m-%d} to {close.index[-1]:%Y-%m-%d}; walk-forward test from
{test_start:%Y-%m-%d} in {BLOCK_H}-hour blocks, each refitted and recalibrated on what was known before it
(calibration: the last {CALIBRATION_H // 24} days). Price horizon 1 hour, persistence forecast, nominal
coverage {COVERAGE:.0%}; thirds of the {len(price):,} test hours by trailing 24-hour volatility.

| interval | coverage | calm | mid | wild | mean width | Winkler (x100) | Kupiec p | Christoffersen p |
|---|---|---|---|---|---|---|---|---|
{rows}

Interval score ratio adaptive / constant: {ratio:.3f} (below 1 is better).

Volatility, horizon {VOL_HORIZON_H} hours ({len(vol):,} test hours): MAE of log volatility: HAR
{volatility["log_mae_har"]:.4f}, naive trailing 24-hour mean {volatility["log_mae_naive"]:.4f}, constant
{volatility["log_mae_constant"]:.4f}. Skill of HAR vs naive {volatility["skill_vs_naive"]:.3f}, vs constant
{volatility["skill_vs_constant"]:.3f}; Diebold-Mariano p-value vs naive {volatility["dm_pvalue"]:.3g}.
Forecasts negative or NaN: {volatility["negative_or_nan"]}.
"""
    command = "python bench/forecast.py" + (" --quick" if args.quick else "")
    publish(
        "Forecast: volatility and adaptive intervals",
        command,
        body,
        {
            "coverage_calm": round(a["calm"], 4),
            "coverage_mid": round(a["mid"], 4),
            "coverage_wild": round(a["wild"], 4),
            "coverage_overall": round(a["overall"], 4),
            "interval_score_vs_constant": round(ratio, 4),
            "vol_skill_vs_naive": round(volatility["skill_vs_naive"], 4),
            "vol_dm_pvalue": volatility["dm_pvalue"],
            "constant_coverage_by_third": [round(c[t], 4) for t in ("calm", "mid", "wild")],
            "vol_skill_vs_constant": round(volatility["skill_vs_constant"], 4),
        },
    )


if __name__ == "__main__":
    main()
