"""Market data: trades from the exchange, closed candles, indicator rows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, model_validator

from cryptopredict.models.base import DomainModel, UtcDatetime


class Trade(DomainModel):
    """One exchange trade. `timestamp` is the exchange's event time, `ingested_at` our receive time."""

    pair: str = Field(min_length=3, pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")
    trade_id: int = Field(ge=0)
    price: PositiveFloat
    qty: PositiveFloat
    side: Literal["buy", "sell"]
    ord_type: Literal["market", "limit"] = "limit"
    timestamp: UtcDatetime
    ingested_at: UtcDatetime


class Candle(DomainModel):
    """A closed OHLCV candle for [window_start, window_end). `gap` marks a window without trades."""

    pair: str
    interval_s: int = Field(gt=0)
    window_start: UtcDatetime
    window_end: UtcDatetime
    open: PositiveFloat
    high: PositiveFloat
    low: PositiveFloat
    close: PositiveFloat
    volume: float = Field(ge=0)
    vwap: PositiveFloat
    trade_count: int = Field(ge=0)
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    gap: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Candle:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError("need low <= open, close <= high")
        if self.gap != (self.trade_count == 0):
            raise ValueError("gap must be set exactly when trade_count is 0")
        return self


class IndicatorRow(DomainModel):
    """Technical indicators for one closed candle; `warm_up` marks rows whose windows are not yet full."""

    pair: str
    interval_s: int = Field(gt=0)
    window_start: UtcDatetime
    values: dict[str, float | None]
    warm_up: bool


class DeadLetter(DomainModel):
    """Input a stage rejected, kept intact with the reason so a person can inspect it."""

    source: str
    reason: str
    raw: str
    at: UtcDatetime
