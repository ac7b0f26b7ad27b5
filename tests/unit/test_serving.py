"""The live prediction from a loaded forecaster: price, interval bounds, and refusal on missing inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.ml.pyfunc import ForecastPythonModel, ForecastSpec, LinearParams
from cryptopredict.ml.serving import predict_next, stale_sentiment
from cryptopredict.models import ModelRef, Prediction, PredictionRefusal
from cryptopredict.simulators.markets import synthetic_candles

pytestmark = pytest.mark.unit

CONFIG = IndicatorConfig()
REF = ModelRef(name="cryptopredict-tstusd-60s-h1", version="3", flavor="linear")


class Loaded:
    """What mlflow.pyfunc.load_model returns, as far as serving uses it (the MLflow round trip itself is
    tested in test_ml_pyfunc)."""

    def __init__(self, spec: ForecastSpec) -> None:
        self.model = ForecastPythonModel()
        self.model.spec = spec

    def unwrap_python_model(self) -> ForecastPythonModel:
        return self.model

    def predict(self, frame):  # type: ignore[no-untyped-def]
        return self.model.predict(None, frame)


def linear_on_last_return(coef: float, interval=(-0.002, 0.003)) -> Loaded:
    linear = LinearParams(mean=[0.0], scale=[1.0], coef=[coef], intercept=0.0001)
    return Loaded(ForecastSpec(family="linear", features=["ret_lag_1"], interval=interval, linear=linear))


def history_with_indicators(n: int):
    from datetime import UTC, datetime

    candles = synthetic_candles("TST/USD", 60, n, datetime(2026, 1, 1, tzinfo=UTC), seed=2)
    state = IndicatorState.new("TST/USD", 60, CONFIG)
    values = [state.update(c).values for c in candles]
    return candles, values[-1]


def test_the_prediction_carries_the_price_and_the_interval_of_the_model():
    candles, values = history_with_indicators(100)
    prediction = predict_next(linear_on_last_return(-0.5), REF, candles[-11:], values, 10, 1, CONFIG)
    assert isinstance(prediction, Prediction)
    last, previous = candles[-1].close, candles[-2].close
    log_return = 0.0001 - 0.5 * math.log(last / previous)
    assert prediction.predicted_price == pytest.approx(last * math.exp(log_return), rel=1e-12)
    assert prediction.lower_price == pytest.approx(last * math.exp(log_return - 0.002), rel=1e-12)
    assert prediction.upper_price == pytest.approx(last * math.exp(log_return + 0.003), rel=1e-12)
    assert prediction.feature_time == candles[-1].window_start
    assert prediction.target_time == candles[-1].window_end + (
        candles[-1].window_end - candles[-1].window_start
    )
    assert (prediction.model_name, prediction.model_version) == (REF.name, REF.version)


def test_incomplete_inputs_give_the_reason_instead_of_a_number():
    candles, values = history_with_indicators(30)  # sma_60 has no value yet
    spec = ForecastSpec(family="persistence", features=["sma_60_rel"], interval=(0.0, 0.0))
    refusal = predict_next(Loaded(spec), REF, candles[-11:], values, 10, 1, CONFIG)
    assert (
        isinstance(refusal, PredictionRefusal) and refusal.reason == "warm-up: sma_60_rel have no value yet"
    )
    assert refusal.feature_time == candles[-1].window_start and refusal.model_version == "3"

    holed = [*candles[-11:-3], *candles[-2:]]  # a candle missing inside the lag window
    refusal = predict_next(linear_on_last_return(-0.5), REF, holed, values, 10, 1, CONFIG)
    assert isinstance(refusal, Prediction)  # the model reads ret_lag_1 only, still complete
    needs_two = Loaded(ForecastSpec(family="persistence", features=["ret_lag_2"], interval=(0.0, 0.0)))
    refusal = predict_next(needs_two, REF, holed, values, 10, 1, CONFIG)  # the return into the hole
    assert isinstance(refusal, PredictionRefusal) and refusal.reason.startswith("incomplete history")

    persistence = Loaded(ForecastSpec(family="persistence", features=[], interval=(0.0, 0.0)))
    assert isinstance(predict_next(persistence, REF, candles[-11:], values, 10, 1, CONFIG), Prediction)


def test_sentiment_older_than_the_limit_is_stale() -> None:
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    limit = timedelta(hours=6)
    assert stale_sentiment(at - timedelta(hours=5, minutes=59), at, limit) is None
    assert stale_sentiment(at - limit, at, limit) is None  # at the limit: still fresh
    reason = stale_sentiment(at - timedelta(hours=7), at, limit)
    assert reason is not None and "7.0 h old" in reason and "limit 6.0 h" in reason
    assert stale_sentiment(None, at, limit) == "stale sentiment: the coin has no sentiment score yet"


def test_a_zero_width_interval_gives_no_bounds():
    # The bootstrap persistence champion is logged with interval (0, 0): it has no interval to report.
    candles, values = history_with_indicators(100)
    prediction = predict_next(
        linear_on_last_return(-0.5, (0.0, 0.0)), REF, candles[-11:], values, 10, 1, CONFIG
    )
    assert isinstance(prediction, Prediction)
    assert prediction.lower_price is None and prediction.upper_price is None
