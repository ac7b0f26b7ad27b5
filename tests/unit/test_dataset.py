"""The training dataset: timestamp-aligned targets, gaps dropped and counted, no look-ahead, and the same
input row as the live path."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cryptopredict.features.candles import gap_candle
from cryptopredict.features.cross_venue import feature_names
from cryptopredict.features.indicators import IndicatorConfig, IndicatorState, indicator_frame
from cryptopredict.features.model_inputs import feature_frame, latest_inputs, sentiment_at
from cryptopredict.features.sentiment import sentiment_features
from cryptopredict.ml import lifecycle
from cryptopredict.ml.dataset import TARGET, build_dataset, indicator_values
from cryptopredict.ml.pyfunc import ForecastPythonModel, ForecastSpec
from cryptopredict.ml.serving import cross_venue_window, history_length
from cryptopredict.models import Candle

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIR = "TST/USD"
SMALL = IndicatorConfig(sma_windows=(3, 5), ema_windows=(3,), rsi_window=3, macd_fast=3, macd_slow=5,
                        macd_signal=2, bb_window=4, atr_window=3)  # fmt: skip


def walk(n: int, seed: int = 1, gaps=(), missing=()) -> list[Candle]:
    rng, price, out = random.Random(seed), 100.0, []
    for i in range(n):
        start = T0 + timedelta(minutes=i)
        if i in missing:
            continue
        if i in gaps:
            out.append(gap_candle(PAIR, 60, start, price))
            continue
        close = price * math.exp(rng.gauss(0, 0.002))
        out.append(
            Candle(
                pair=PAIR,
                interval_s=60,
                window_start=start,
                window_end=start + timedelta(minutes=1),
                open=price,
                high=max(price, close) * 1.0005,
                low=min(price, close) * 0.9995,
                close=close,
                volume=1.0 + rng.random(),
                vwap=(price + close) / 2,
                trade_count=3,
            )
        )
        price = close
    return out


def frame_of(candles: list[Candle]) -> pd.DataFrame:
    return pd.DataFrame([c.model_dump() for c in candles])


def dataset(
    candles: list[Candle], lags: int = 3, horizon: int = 1, config: IndicatorConfig = SMALL, sentiment=None
):
    frame = frame_of(candles)
    values, _ = indicator_values(frame, PAIR, 60, None, config)
    return build_dataset(frame, 60, lags, horizon, values, sentiment, config)


def sentiment_at_closes(candles: list[Candle]) -> pd.DataFrame:
    """Scores every 7 minutes; features taken at each candle's close, indexed by its start."""
    scores = pd.DataFrame(
        {
            "scored_at": [T0 + timedelta(minutes=7 * k, seconds=30) for k in range(20)],
            "score": [(-1, 0, 1)[k % 3] for k in range(20)],
            "confidence": [0.5 + 0.02 * k for k in range(20)],
        }
    )
    features = sentiment_features(scores, pd.DatetimeIndex([c.window_end for c in candles]))
    features.index = pd.DatetimeIndex([c.window_start for c in candles])
    return features


def test_target_is_aligned_by_time_and_rows_touching_gaps_are_dropped_and_counted():
    candles = walk(80, gaps={40}, missing={55})
    ds = dataset(candles, lags=3, horizon=2)
    times = set(ds.frame["window_start"])
    closes = {c.window_start: c.close for c in candles}
    for t in ds.frame["window_start"]:
        minute = int((t - T0).total_seconds() // 60)
        assert not any(m in (40, 55) for m in range(minute - 3, minute + 1)), "window touches a gap"
        assert minute + 2 not in (40, 55), "target touches a gap"
    row = ds.frame.iloc[5]
    target_time = row["window_start"] + timedelta(minutes=2)
    assert row[TARGET] == pytest.approx(math.log(closes[target_time] / closes[row["window_start"]]))
    # Minutes 41-43 have a gap in their lag window, 53-54 and 38-39 a gap or hole as their target.
    assert T0 + timedelta(minutes=42) not in times and T0 + timedelta(minutes=38) not in times
    assert ds.dropped["window_touches_gap"] > 0 and ds.dropped["target_touches_gap"] > 0
    assert ds.dropped["indicator_warm_up"] > 0  # the first rows, before the slowest indicator is ready


def test_features_on_a_history_truncated_at_t_equal_the_full_history_features_at_t():
    candles = walk(120, gaps={70})
    full = dataset(candles).frame.set_index("window_start")
    for cut in (30, 64, 90, 119):
        truncated = dataset(candles[: cut + 1]).frame.set_index("window_start")
        common = truncated.index.intersection(full.index)
        assert len(common) > 0
        features = [c for c in truncated.columns if c not in ("target_close", TARGET)]
        pd.testing.assert_frame_equal(truncated.loc[common, features], full.loc[common, features])


class Loaded:
    """A loaded forecaster, as far as forecast_spec reads it."""

    def __init__(self, spec: ForecastSpec) -> None:
        self.model = ForecastPythonModel()
        self.model.spec = spec

    def unwrap_python_model(self) -> ForecastPythonModel:
        return self.model


def test_the_live_input_row_equals_the_training_row():
    """The prediction path computes its row from floats (model_inputs.latest_inputs): the recent candles,
    the streaming indicator state, the sentiment at the candle's close and the other venue's candles it
    reads from the store (the window cross_venue_window names). At every candle, a gap and a missing
    candle of either venue included, it is the training row bit for bit: same names, order and values,
    NaN at the same places (exact equality, no tolerance)."""
    candles, lags, other_lags = walk(100, gaps={40}, missing={70}), 3, 2
    other = [
        c.model_copy(update={"exchange": "coinbase"}) for c in walk(100, seed=5, gaps={60}, missing={80})
    ]
    others = frame_of(other)
    sentiment = sentiment_at_closes(candles)
    frame = frame_of(candles)
    values, _ = indicator_values(frame, PAIR, 60, None, SMALL)
    cross_venue = {"coinbase": others}
    built = build_dataset(frame, 60, lags, 1, values, sentiment, SMALL, cross_venue, other_lags)
    ds = built.frame.set_index("window_start")
    assert {"sentiment_mean_1h", "sentiment_log_count_24h", "xv_coinbase_ret_lag_2"} <= set(ds.columns)
    assert built.dropped["cross_venue_missing"] == 6  # each gap or hole there: in the spread and two lags
    training, _ = feature_frame(frame, 60, lags, values, SMALL, sentiment, cross_venue, other_lags)
    model = Loaded(ForecastSpec(family="persistence", features=feature_names("coinbase", 2), interval=(0, 0)))
    state = IndicatorState.new(PAIR, 60, SMALL)
    kept = 0
    for i, candle in enumerate(candles):
        values = state.update(candle).values
        at = sentiment_at(sentiment.loc[[candle.window_start]], candle.window_start)
        markets, start, end = cross_venue_window(model, candle, lambda exchange: [PAIR])
        assert markets == {"coinbase": f"coinbase:{PAIR}"}
        stored = others[(others["window_start"] >= start) & (others["window_start"] < end)]
        history = candles[max(0, i + 1 - history_length(lags)) : i + 1]
        row = latest_inputs(history, values, lags, SMALL, at, {"coinbase": stored}, other_lags)
        assert list(row) == built.features == list(training.columns)
        np.testing.assert_array_equal(list(row.values()), training.loc[candle.window_start].to_numpy())
        if candle.window_start in ds.index:
            np.testing.assert_array_equal(
                list(row.values()), ds.loc[candle.window_start, list(row)].to_numpy()
            )
            kept += 1
    assert kept > 50 and kept < len(candles) - 10


def test_indicators_come_from_the_store_only_when_they_cover_every_candle():
    frame = frame_of(walk(50))
    computed = indicator_frame(walk(50), SMALL)[SMALL.feature_names()]
    values, source = indicator_values(frame, PAIR, 60, computed, SMALL)
    assert source == "store"
    values, source = indicator_values(frame, PAIR, 60, computed.iloc[10:], SMALL)
    assert source == "computed"
    pd.testing.assert_frame_equal(values, computed, check_freq=False)


def test_a_feature_that_peeks_into_the_future_is_refused_as_leakage():
    """A planted feature holding most of the target gives a skill no honest model has at this horizon:
    the gate refuses it as leakage, whatever its p-value."""
    ds = dataset(walk(1500, seed=5), lags=3)
    frame = ds.frame.copy()
    rng = np.random.default_rng(0)
    frame["peek"] = frame[TARGET] + rng.normal(0, 0.0003, len(frame))
    features = [*ds.features, "peek"]
    data = lifecycle.split(frame, 0.2, timedelta(minutes=1), n_folds=3, min_train_rows=100)
    challenger = lifecycle.evaluate_challenger(
        "linear", {"estimator": "ridge", "ridge_alpha": 1e-3}, data, features, 0.8, 10_000, 1, [0.1, 0.5, 0.9]
    )
    decision = lifecycle.gate(challenger, None, data.test, 1, 0.05, max_plausible_skill=0.5)
    assert challenger.metrics.skill_vs_persistence > 0.5
    assert not decision.promote and any("leakage" in reason for reason in decision.reasons)

    honest = lifecycle.evaluate_challenger(
        "linear",
        {"estimator": "ridge", "ridge_alpha": 1.0},
        data,
        ds.features,
        0.8,
        10_000,
        1,
        [0.1, 0.5, 0.9],
    )
    assert honest.metrics.skill_vs_persistence < 0.5
