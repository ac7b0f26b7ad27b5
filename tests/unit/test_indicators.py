"""Incremental indicators against the `ta` library over the same candles, gaps included."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ta_parity import assert_matches_ta

from cryptopredict.features.candles import gap_candle
from cryptopredict.features.indicators import (
    BB_LOWER,
    BB_MID,
    BB_UPPER,
    BB_WIDTH,
    MACD_SIGNAL,
    WARM_UP,
    IndicatorConfig,
    IndicatorState,
    RollingStd,
    atr_name,
    indicator_frame,
    numpy_sum,
    rsi_name,
    ta_frame,
)
from cryptopredict.models import Candle
from cryptopredict.store.ohlcvt import read_ohlcvt

pytestmark = pytest.mark.unit

PAIR = "BTC/USD"
START = datetime(2024, 1, 1, tzinfo=UTC)


def random_walk(n: int, seed: int = 7, interval_s: int = 60) -> list[Candle]:
    """A random-walk market with single gap candles and runs of gaps longer than every window, so
    constant windows (pandas' same-value shortcut, cancelled variances) are exercised."""
    rng = np.random.default_rng(seed)
    step = timedelta(seconds=interval_s)
    candles: list[Candle] = []
    close = 30_000.0
    gap_left = 0
    for i in range(n):
        start = START + i * step
        if i > 0 and gap_left == 0 and rng.random() < 0.02:
            gap_left = int(rng.choice([1, 3, 25, 70]))
        if gap_left > 0:
            gap_left -= 1
            candles.append(gap_candle(PAIR, interval_s, start, close))
            continue
        open_ = close
        close = max(1.0, close * math.exp(rng.normal(0, 0.004)))
        high = max(open_, close) * (1 + abs(rng.normal(0, 0.002)))
        low = min(open_, close) * (1 - abs(rng.normal(0, 0.002)))
        volume = float(rng.exponential(2.0))
        candles.append(
            Candle(
                pair=PAIR,
                interval_s=interval_s,
                window_start=start,
                window_end=start + step,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume,
                vwap=(high + low + close) / 3,
                trade_count=int(rng.integers(1, 50)),
            )
        )
    return candles


def test_matches_ta_on_a_random_walk_with_gaps() -> None:
    candles = random_walk(4000)
    assert sum(c.gap for c in candles) > 200
    config = IndicatorConfig()
    assert_matches_ta(indicator_frame(candles, config), ta_frame(candles, config), config)


def from_closes(closes: list[float]) -> list[Candle]:
    step = timedelta(minutes=1)
    return [
        Candle(
            pair=PAIR,
            interval_s=60,
            window_start=START + i * step,
            window_end=START + (i + 1) * step,
            open=close,
            high=close * 1.001,
            low=close * 0.999,
            close=close,
            volume=1.0,
            vwap=close,
            trade_count=1,
        )
        for i, close in enumerate(closes)
    ]


def test_matches_ta_where_pandas_recomputes_a_cancelled_variance(monkeypatch) -> None:
    # A spike leaving a quiet Bollinger window cancels nearly all of the running sum of squares;
    # pandas then recomputes the window from its values, and so must we.
    rng = np.random.default_rng(1)
    closes = [30_000 + float(rng.normal(0, 1e-3)) for _ in range(300)]
    for spike in (50, 140, 230):
        closes[spike] = 3e7
    recomputed = []
    add = RollingStd._add

    def counting_add(self: RollingStd, x: float) -> bool:
        recomputed.append(self.nobs)
        return add(self, x)

    monkeypatch.setattr(RollingStd, "_add", counting_add)
    candles = from_closes(closes)
    ours = indicator_frame(candles)
    assert len(recomputed) > len(candles)
    assert_matches_ta(ours, ta_frame(candles), IndicatorConfig())


def test_matches_ta_with_other_windows() -> None:
    config = IndicatorConfig(
        sma_windows=(3, 50, 5),
        ema_windows=(2, 33),
        rsi_window=5,
        macd_fast=5,
        macd_slow=13,
        macd_signal=4,
        bb_window=10,
        bb_std=2.5,
        atr_window=3,
    )
    candles = random_walk(3000, seed=11)
    assert_matches_ta(indicator_frame(candles, config), ta_frame(candles, config), config)


def test_matches_ta_on_a_history_shorter_than_the_windows() -> None:
    candles = random_walk(30, seed=3)
    frame = indicator_frame(candles)
    assert_matches_ta(frame, ta_frame(candles), IndicatorConfig())
    assert frame[WARM_UP].all()


@pytest.mark.realdata
def test_matches_ta_over_the_whole_xbtusd_history(shared_data) -> None:
    candles = list(read_ohlcvt(shared_data / "kraken" / "XBTUSD_60.csv", "XBT/USD", 3600))
    assert len(candles) > 80_000 and any(c.gap for c in candles)
    config = IndicatorConfig()
    assert_matches_ta(indicator_frame(candles, config), ta_frame(candles, config), config)


def test_warm_up_follows_tas_first_values() -> None:
    config = IndicatorConfig()
    frame = indicator_frame(random_walk(200), config)
    first = {column: int(np.argmax(frame[column].notna().to_numpy())) for column in config.feature_names()}
    assert first["sma_7"] == 6 and first["sma_60"] == 59 and first["ema_60"] == 59
    # ta's RSI treats the missing first diff as a zero move, so it starts after window - 1 diffs.
    assert first[rsi_name(14)] == 13
    # The signal line is an EMA of the MACD line, which itself starts at the slow window.
    assert first[MACD_SIGNAL] == 26 + 9 - 2
    assert first[BB_MID] == first[BB_UPPER] == first[BB_WIDTH] == 19
    assert first[atr_name(14)] == 13
    assert first["obv"] == 0
    assert frame[WARM_UP].tolist() == [True] * 59 + [False] * 141


def test_update_yields_the_rows_of_the_frame() -> None:
    candles = random_walk(300)
    frame = indicator_frame(candles)
    state = IndicatorState.new(PAIR, 60)
    for i, candle in enumerate(candles):
        row = state.update(candle)
        assert (row.pair, row.interval_s, row.window_start) == (PAIR, 60, candle.window_start)
        assert row.warm_up == frame[WARM_UP].iloc[i]
        assert list(row.values) == list(frame.columns[:-1])
        expected = [None if math.isnan(v) else v for v in frame.iloc[i, :-1]]
        assert list(row.values.values()) == expected
    assert row.values[BB_WIDTH] == pytest.approx(
        (row.values[BB_UPPER] - row.values[BB_LOWER]) / row.values[BB_MID] * 100  # type: ignore[operator]
    )


@pytest.mark.parametrize("split", [1, 30, 1500])
def test_state_survives_a_json_round_trip_mid_stream(split: int) -> None:
    candles = random_walk(3000, seed=5)
    state = IndicatorState.new(PAIR, 60)
    for candle in candles[:split]:
        state.update(candle)
    restored = IndicatorState.model_validate_json(state.model_dump_json())
    assert restored == state
    # What the Faust table stores: plain JSON data.
    from_table = IndicatorState.model_validate(json.loads(json.dumps(state.model_dump(mode="json"))))
    for candle in candles[split:]:
        expected = state.update(candle)
        assert restored.update(candle) == expected
        assert from_table.update(candle) == expected


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def test_state_size_does_not_grow_with_history() -> None:
    candles = random_walk(5000, seed=9)
    state = IndicatorState.new(PAIR, 60)
    shapes = []
    for i, candle in enumerate(candles, start=1):
        state.update(candle)
        if i in (500, 5000):
            shapes.append(shape(state.model_dump(mode="json")))
    assert shapes[0] == shapes[1]
    assert len(state.prices.closes) == IndicatorConfig().history == 61
    assert state.atr.seed == []


def test_refuses_replayed_and_foreign_candles() -> None:
    candles = random_walk(3)
    state = IndicatorState.new(PAIR, 60)
    state.update(candles[0])
    state.update(candles[1])
    with pytest.raises(ValueError, match="not after"):
        state.update(candles[1])
    with pytest.raises(ValueError, match="fed to"):
        state.update(candles[2].model_copy(update={"pair": "ETH/USD"}))
    with pytest.raises(ValueError, match="fed to"):
        IndicatorState.new(PAIR, 300).update(candles[0])


def test_config_rejects_unusable_windows() -> None:
    with pytest.raises(ValueError):
        IndicatorConfig(sma_windows=(7, 7))
    with pytest.raises(ValueError):
        IndicatorConfig(sma_windows=(1,))
    with pytest.raises(ValueError):
        IndicatorConfig(rsi_window=1)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 14, 16, 17, 100, 128, 129, 300, 1000])
def test_numpy_sum_is_numpys_summation_order(n: int) -> None:
    values = list(np.random.default_rng(n).normal(1e4, 1e3, n) * 1.000000001)
    assert numpy_sum(values) == float(np.add.reduce(np.array(values)))
    assert numpy_sum(values) == float(pd.Series(values).sum())


def test_empty_history_gives_an_empty_frame() -> None:
    frame = indicator_frame([])
    assert frame.empty and list(frame.columns) == [*IndicatorConfig().feature_names(), WARM_UP]
