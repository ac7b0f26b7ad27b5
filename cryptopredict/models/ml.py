"""Model references and the predictions made with them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, model_validator

from cryptopredict.models.base import DomainModel, UtcDatetime
from cryptopredict.models.market import OnMarket


class ModelRef(DomainModel):
    """A registered model version in MLflow, e.g. the current champion of a pair and horizon."""

    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None
    flavor: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


VolatilityRegime = Literal["calm", "mid", "wild"]


class QuantilePrice(DomainModel):
    """The price the model expects to be above the realised one with probability `level`."""

    level: float = Field(gt=0, lt=1)
    price: PositiveFloat


# The gRPC wire's int64 (and the store's BIGINT) bound the seconds a prediction carries; JSON allows any integer.
WireSeconds = Annotated[int, Field(gt=0, le=2**63 - 1)]


class Prediction(OnMarket):
    """A forecast of the close price `horizon_s` after the feature row's candle closed."""

    interval_s: WireSeconds
    horizon_s: WireSeconds
    made_at: UtcDatetime
    feature_time: UtcDatetime
    target_time: UtcDatetime
    last_price: PositiveFloat
    predicted_price: PositiveFloat
    # The model's calibrated prediction interval (nominal coverage set at training); None: none given.
    lower_price: PositiveFloat | None = None
    upper_price: PositiveFloat | None = None
    # The coverage [lower_price, upper_price] was drawn at: the nominal one, moved by adaptive conformal
    # inference when the live ledger shows the interval covering more or less often than nominal.
    interval_level: float | None = Field(default=None, gt=0, lt=1)
    # Calibrated quantiles of the price at target_time, by ascending level.
    quantiles: list[QuantilePrice] = Field(default_factory=list)
    # Forecast mean absolute log return per candle over the horizon, which scaled the interval.
    predicted_volatility: float | None = Field(default=None, ge=0)
    # The third of trailing volatility the forecast was made in (cut points fixed at calibration).
    volatility_regime: VolatilityRegime | None = None
    model_name: str
    model_version: str

    @model_validator(mode="after")
    def _ordered_quantiles(self) -> Prediction:
        levels = [q.level for q in self.quantiles]
        if levels != sorted(set(levels)):
            raise ValueError(f"quantile levels must be distinct and ascending, got {levels}")
        if any(a.price > b.price for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise ValueError("quantile prices must not decrease with the level")
        return self


class ModelEvent(DomainModel):
    """Published to `model_events` when the champion of a registered model moves."""

    registered_model: str
    pair: str  # the target's market key (topics.market_key)
    interval_s: int = Field(gt=0)
    horizon_candles: int = Field(gt=0)
    champion: ModelRef
    previous_version: str | None = None
    kind: str  # "promoted" or "rolled_back"
    reason: str
    at: UtcDatetime


class PredictionRefusal(OnMarket):
    """Published to `prediction_refusals` instead of a number when the model's inputs are incomplete."""

    interval_s: WireSeconds
    horizon_s: WireSeconds
    feature_time: UtcDatetime
    model_name: str
    model_version: str
    reason: str
    at: UtcDatetime
