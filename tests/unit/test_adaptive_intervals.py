"""Volatility-scaled, per-regime conformal intervals: from calibration to the live prediction, and the
online adjustment of their level (adaptive conformal inference)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState, indicator_frame
from cryptopredict.features.model_inputs import complete_grid
from cryptopredict.ml import lifecycle
from cryptopredict.ml.adaptive import GRID_LEVELS, interval_report
from cryptopredict.ml.dataset import TARGET, build_dataset, candles_from_frame
from cryptopredict.ml.intervals import aci_update
from cryptopredict.ml.pyfunc import (
    ForecastPythonModel,
    ForecastSpec,
    calibrated_interval,
    spec_from_estimator,
)
from cryptopredict.ml.serving import history_length, predict_next, volatility_row
from cryptopredict.ml.volatility import TRAILING_VOL, har_feature_names, volatility_inputs
from cryptopredict.models import Candle, ModelRef, Prediction

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIR = "TST/USD"
CONFIG = IndicatorConfig()
REF = ModelRef(name="cryptopredict-tstusd-60s-h1", version="1", flavor="persistence")


def garch_candles(n: int, seed: int = 0) -> list[Candle]:
    """One-minute candles whose returns follow a GARCH(1,1): calm and wild stretches, as real ones."""
    rng = np.random.default_rng(seed)
    variance, price, out = 1e-6, 100.0, []
    for i in range(n):
        variance = 2e-8 + 0.1 * variance * rng.standard_normal() ** 2 + 0.88 * variance
        close = price * math.exp(math.sqrt(variance) * rng.standard_normal())
        start = T0 + timedelta(minutes=i)
        out.append(
            Candle(
                pair=PAIR,
                interval_s=60,
                window_start=start,
                window_end=start + timedelta(minutes=1),
                open=price,
                high=max(price, close),
                low=min(price, close),
                close=close,
                volume=1.0,
                vwap=(price + close) / 2,
                trade_count=2,
            )
        )
        price = close
    return out


def frame_of(candles: list[Candle]) -> pd.DataFrame:
    return pd.DataFrame([c.model_dump() for c in candles])


def split_of(candles: list[Candle]) -> lifecycle.Split:
    frame = frame_of(candles)
    values = indicator_frame(candles_from_frame(frame, PAIR, 60), CONFIG)[CONFIG.feature_names()]
    dataset = build_dataset(frame, 60, 3, 1, values, None, CONFIG)
    return lifecycle.split(dataset.frame, 0.25, timedelta(minutes=1), n_folds=4, min_train_rows=300)


@pytest.fixture(scope="module")
def market() -> tuple[list[Candle], lifecycle.Split]:
    candles = garch_candles(12_000)
    return candles, split_of(candles)


class Loaded:
    """What mlflow.pyfunc.load_model returns, as far as serving uses it."""

    def __init__(self, spec: ForecastSpec) -> None:
        self.model = ForecastPythonModel()
        self.model.spec = spec

    def unwrap_python_model(self) -> ForecastPythonModel:
        return self.model

    def predict(self, frame):  # type: ignore[no-untyped-def]
        return self.model.predict(None, frame)


def test_the_live_volatility_inputs_equal_the_training_rows(market):
    candles, data = market
    rows = data.test.set_index("window_start")
    index = {c.window_start: i for i, c in enumerate(candles)}
    columns = [*har_feature_names(), TRAILING_VOL]
    for start in rows.index[:: len(rows) // 40]:
        i = index[start]
        live = pd.Series(volatility_row(candles[max(0, i + 1 - history_length(3)) : i + 1]))
        np.testing.assert_allclose(
            live[columns].to_numpy(float), rows.loc[start, columns].to_numpy(float), rtol=1e-12
        )


def test_the_live_volatility_inputs_equal_the_training_ones_around_a_missing_candle(market):
    candles, _ = market
    holed = candles[:400] + candles[401:700]  # the candle at 400 never arrived
    grid = complete_grid(frame_of(holed), 60)
    expected = volatility_inputs(grid)
    for i in range(390, len(holed), 7):
        live = pd.Series(volatility_row(holed[max(0, i + 1 - history_length(3)) : i + 1]))
        at = expected.loc[holed[i].window_start]
        np.testing.assert_allclose(live[at.index].to_numpy(float), at.to_numpy(float), rtol=1e-12)
    # Every window reaching over the hole is unknown, then known again once past it.
    assert np.isnan(expected.loc[holed[400].window_start, "log_vol_168"])
    assert np.isfinite(expected.loc[holed[400 + 168].window_start, "log_vol_168"])


def test_the_adaptive_interval_holds_its_coverage_in_every_regime_where_constant_width_does_not(market):
    """On returns with volatility clustering, the constant-width interval over-covers calm minutes and
    under-covers wild ones; the scaled, per-regime one is near nominal in each third, and narrower on
    average for the same coverage (interval score below the constant one's)."""
    _, data = market
    calibration = lifecycle.persistence_calibration(data, 1)
    assert calibration.adaptive is not None
    test = data.test
    figures = interval_report(test[TARGET], np.zeros(len(test)), calibration, test, 0.8, [0.1, 0.5, 0.9])
    for regime in ("calm", "mid", "wild"):
        assert abs(figures[f"coverage_{regime}"] - 0.8) < 0.05, figures
    assert figures["constant_coverage_calm"] - figures["constant_coverage_wild"] > 0.1, figures
    assert figures["interval_score_vs_constant"] < 1.0
    assert figures["adaptive_share"] > 0.95


def test_a_calibrated_persistence_champion_serves_an_interval_quantiles_and_its_volatility(market):
    candles, data = market
    calibration = lifecycle.persistence_calibration(data, 1)
    spec = spec_from_estimator(
        "persistence", None, [], calibrated_interval(calibration, 0.8), calibration=calibration, coverage=0.8
    )
    state = IndicatorState.new(PAIR, 60, CONFIG)
    values = [state.update(c).values for c in candles[-400:]][-1]
    history = candles[-history_length(3) :]
    made = predict_next(Loaded(spec), REF, history, values, 3, 1, CONFIG, quantile_levels=[0.1, 0.5, 0.9])
    assert isinstance(made, Prediction)
    assert made.lower_price < made.predicted_price < made.upper_price
    assert [q.level for q in made.quantiles] == [0.1, 0.5, 0.9]
    assert made.quantiles[0].price == pytest.approx(made.lower_price, rel=1e-9)  # 80%: the 10-90 band
    assert made.predicted_volatility is not None and made.predicted_volatility > 0
    assert made.volatility_regime in ("calm", "mid", "wild") and made.interval_level == 0.8

    wider = predict_next(Loaded(spec), REF, history, values, 3, 1, CONFIG, interval_level=0.9)
    assert isinstance(wider, Prediction) and wider.interval_level == 0.9
    assert wider.lower_price < made.lower_price and wider.upper_price > made.upper_price

    # Too little history for the volatility inputs: the constant-width interval, and no volatility.
    short = predict_next(Loaded(spec), REF, history[-20:], values, 3, 1, CONFIG)
    assert isinstance(short, Prediction) and short.predicted_volatility is None
    assert short.volatility_regime is None
    lower, upper = calibrated_interval(calibration, 0.8)
    assert short.lower_price == pytest.approx(short.last_price * math.exp(lower), rel=1e-9)
    assert short.upper_price == pytest.approx(short.last_price * math.exp(upper), rel=1e-9)


def test_a_spec_refuses_a_constant_quantile_grid_of_the_wrong_size():
    with pytest.raises(ValueError, match="one value per grid level"):
        ForecastSpec(family="persistence", features=[], interval=(0.0, 0.0), constant_quantiles=[0.0, 1.0])
    assert len(GRID_LEVELS) == 199 and 0.1 in GRID_LEVELS and 0.9 in GRID_LEVELS


def test_aci_widens_after_misses_narrows_after_hits_and_settles_at_the_nominal_rate():
    alpha = 0.2
    assert aci_update(alpha, [True] * 10, 0.2, 0.01) < alpha  # misses: a smaller alpha, a wider interval
    assert aci_update(alpha, [False] * 10, 0.2, 0.01) > alpha
    assert aci_update(alpha, [True] * 10_000, 0.2, 0.05) == 0.005  # clipped
    # An interval that misses whenever alpha is above the true miss rate converges to it.
    rng, alpha, misses = np.random.default_rng(1), 0.2, []
    for _ in range(20_000):
        width = stats.norm.ppf(1 - alpha / 2) * 0.8  # too narrow: misses more than alpha
        miss = abs(rng.normal()) > width
        misses.append(miss)
        alpha = aci_update(alpha, [miss], 0.2, 0.005)
    assert abs(np.mean(misses[-10_000:]) - 0.2) < 0.02
