"""Walk-forward backtest of price intervals and volatility forecasts on a series of closes: refitted
and recalibrated block by block on what was known before each block (bench/forecast.py prints it).

Price: the persistence forecast (no change), whose residual is the return itself, with two intervals
from one calibration window, by the code a model is calibrated and served with (ml.adaptive): constant
width (split conformal on the returns) and adaptive (returns divided by a HAR forecast of the next
candle's volatility, fitted on the hours before the window, conformal per volatility regime, regimes by
the trailing day's volatility with cut points fixed on the calibration window). Volatility: HAR against
the naive trailing mean and a constant, by the MAE of log volatility.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptopredict.ml.adaptive import Scaled, bounds, calibrate, scale_of
from cryptopredict.ml.evaluation import diebold_mariano
from cryptopredict.ml.intervals import christoffersen_pvalue, interval_coverage, kupiec_pvalue, winkler_score
from cryptopredict.ml.volatility import (
    FUTURE_VOL,
    TRAILING_VOL,
    HarModel,
    absolute_returns,
    future_volatility,
    har_features,
    trailing_volatility,
    volatility_inputs,
)

COVERAGE = 0.8
BLOCK_H = 720
CALIBRATION_H = 90 * 24
VOL_HORIZON_H = 24


def load_hours(path: Path, since: str) -> pd.Series:
    frame = pd.read_csv(path, header=None, usecols=[0, 4], names=["time", "close"])
    close = frame.set_index(pd.to_datetime(frame.time, unit="s", utc=True)).close
    close = close[close.index >= pd.Timestamp(since, tz="UTC")]
    return close.resample("1h").last().ffill()


def walk_forward(close: pd.Series, test_start: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    abs_ret = absolute_returns(close)
    next_return = np.log(close).diff().shift(-1)
    features = har_features(abs_ret)
    # The price intervals by the code that calibrates and serves a model's (cryptopredict.ml.adaptive).
    inputs = volatility_inputs(pd.DataFrame({"close": close, "missing": close.isna()}))
    inputs[FUTURE_VOL] = future_volatility(abs_ret, 1)
    day_vol = future_volatility(abs_ret, VOL_HORIZON_H)
    trailing_day = trailing_volatility(abs_ret, 24)
    positions = np.arange(len(close))
    first = int(close.index.searchsorted(test_start))
    price_rows, vol_rows = [], []
    for start in tqdm(range(first, len(close) - 1, BLOCK_H), desc="walk-forward blocks", file=sys.stderr):
        block = slice(start, min(start + BLOCK_H, len(close) - 1))
        # Outcomes known at the block's start: the return of hour t is known once hour t + 1 has closed.
        known = positions < start - 1
        calibration = known & (positions >= start - 1 - CALIBRATION_H)
        fitted = calibrate(next_return[calibration], inputs[calibration], inputs[known & ~calibration])
        scaled = (
            scale_of(fitted.adaptive, inputs[block])
            if fitted.adaptive
            else [Scaled(None, None)] * (block.stop - block.start)
        )
        adaptive_low, adaptive_high = bounds(fitted.constant, fitted.adaptive, scaled, COVERAGE)
        constant_low, constant_high = bounds(fitted.constant, None, scaled, COVERAGE)
        price_rows.append(
            pd.DataFrame(
                {
                    "actual": next_return[block],
                    "trailing": inputs[TRAILING_VOL][block],
                    "const_low": constant_low,
                    "const_high": constant_high,
                    "adaptive_low": adaptive_low,
                    "adaptive_high": adaptive_high,
                }
            )
        )
        # The volatility model sees only targets whose 24 hours ended before the block.
        vol_known = positions < start - VOL_HORIZON_H
        har = HarModel.fit(features[vol_known], day_vol[vol_known])
        vol_rows.append(
            pd.DataFrame(
                {
                    "actual": day_vol[block],
                    "har": har.predict(features[block]),
                    "naive": trailing_day[block],
                    "constant": float(day_vol[vol_known].mean()),
                }
            )
        )
    return pd.concat(price_rows).dropna(), pd.concat(vol_rows).dropna()


def interval_figures(price: pd.DataFrame) -> dict[str, dict[str, float]]:
    thirds = pd.qcut(price.trailing, 3, labels=["calm", "mid", "wild"])
    figures: dict[str, dict[str, float]] = {}
    for kind in ("const", "adaptive"):
        low, high = price[f"{kind}_low"], price[f"{kind}_high"]
        inside = ((price.actual >= low) & (price.actual <= high)).to_numpy()
        figures[kind] = {
            "overall": interval_coverage(price.actual, low, high),
            **{
                third: interval_coverage(
                    price.actual[thirds == third], low[thirds == third], high[thirds == third]
                )
                for third in ("calm", "mid", "wild")
            },
            "winkler": winkler_score(price.actual, low, high, COVERAGE),
            "mean_width": float(np.mean(high - low)),
            "kupiec_p": kupiec_pvalue(inside, COVERAGE),
            "christoffersen_p": christoffersen_pvalue(inside),
        }
    return figures


def volatility_figures(vol: pd.DataFrame) -> dict[str, float]:
    log_actual = np.log(vol.actual.clip(lower=1e-6))
    errors = {name: np.log(vol[name].clip(lower=1e-6)) - log_actual for name in ("har", "naive", "constant")}
    mae = {name: float(np.mean(np.abs(e))) for name, e in errors.items()}
    dm = diebold_mariano(errors["har"].to_numpy(), errors["naive"].to_numpy(), horizon_steps=VOL_HORIZON_H)
    return {
        **{f"log_mae_{name}": value for name, value in mae.items()},
        "skill_vs_naive": 1 - mae["har"] / mae["naive"],
        "skill_vs_constant": 1 - mae["har"] / mae["constant"],
        "dm_pvalue": dm.pvalue,
        "negative_or_nan": int((~np.isfinite(vol.har) | (vol.har <= 0)).sum()),
    }
