"""Model references and the predictions made with them."""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from cryptopredict.models.base import DomainModel, UtcDatetime


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


class Prediction(DomainModel):
    """A forecast of the close price `horizon_s` after the feature row's candle closed."""

    pair: str
    interval_s: int = Field(gt=0)
    horizon_s: int = Field(gt=0)
    made_at: UtcDatetime
    feature_time: UtcDatetime
    target_time: UtcDatetime
    last_price: PositiveFloat
    predicted_price: PositiveFloat
    # The model's calibrated prediction interval (nominal coverage set at training); None: none given.
    lower_price: PositiveFloat | None = None
    upper_price: PositiveFloat | None = None
    model_name: str
    model_version: str


class ModelEvent(DomainModel):
    """Published to `model_events` when the champion of a registered model moves."""

    registered_model: str
    pair: str
    interval_s: int = Field(gt=0)
    horizon_candles: int = Field(gt=0)
    champion: ModelRef
    previous_version: str | None = None
    kind: str  # "promoted" or "rolled_back"
    reason: str
    at: UtcDatetime


class PredictionRefusal(DomainModel):
    """Published to `prediction_refusals` instead of a number when the model's inputs are incomplete."""

    pair: str
    interval_s: int = Field(gt=0)
    horizon_s: int = Field(gt=0)
    feature_time: UtcDatetime
    model_name: str
    model_version: str
    reason: str
    at: UtcDatetime
