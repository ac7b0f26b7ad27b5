"""Predictions that tests of every tier build on: one record of a model, and the uncertainty fields a
model may add to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptopredict.models.ml import Prediction, QuantilePrice

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def prediction(**overrides: Any) -> Prediction:
    """BTC/USD at 1m, 5 candles ahead, made at T0 plus 1.123456 s; `overrides` replace any field."""
    fields: dict[str, Any] = {
        "pair": "BTC/USD",
        "interval_s": 60,
        "horizon_s": 300,
        "made_at": T0 + timedelta(seconds=1, microseconds=123456),
        "feature_time": T0,
        "target_time": T0 + timedelta(seconds=300),
        "last_price": 64_000.5,
        "predicted_price": 64_012.25,
        "model_name": "cryptopredict-btcusd-60s-h5",
        "model_version": "7",
    }
    return Prediction.model_validate(fields | overrides)


def with_uncertainty(p: Prediction, regime: str = "mid") -> Prediction:
    """`p` with an 81.5% interval, quantiles at the served levels (0.1, 0.5, 0.9), a volatility and
    `regime`. Its prices must be above 40."""
    price = p.predicted_price
    return p.model_copy(
        update={
            "lower_price": price - 40.0,
            "upper_price": price + 40.5,
            "interval_level": 0.815,
            "quantiles": [
                QuantilePrice(level=0.1, price=price - 30.0),
                QuantilePrice(level=0.5, price=price),
                QuantilePrice(level=0.9, price=price + 30.0),
            ],
            "predicted_volatility": 0.0007,
            "volatility_regime": regime,
        }
    )
