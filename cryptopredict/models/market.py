"""Market data: trades from the exchange, closed candles, indicator rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field, PositiveFloat, field_validator, model_validator

from cryptopredict.models.base import DomainModel, UtcDatetime
from cryptopredict.topics import KRAKEN, PAIR_PATTERN, Exchange, market_key


class OnMarket(DomainModel):
    """Anything of one pair on one venue. Records written before venues existed carry no exchange: Kraken."""

    exchange: Exchange = KRAKEN
    pair: str

    @property
    def market(self) -> str:
        """Its record key and Faust table key (the pair itself on Kraken): see topics.market_key."""
        return market_key(self.exchange, self.pair)


class Trade(OnMarket):
    """One exchange trade. `timestamp` is the exchange's event time, `ingested_at` our receive time.
    `trade_id` is the venue's own sequence for the pair, so it is unique per (exchange, pair)."""

    pair: str = Field(min_length=3, pattern=PAIR_PATTERN)
    # Bounded by what the store and the recordings hold (BIGINT, int64); JSON allows any integer.
    trade_id: int = Field(ge=0, le=2**63 - 1)
    # JSON from Python (and Kraken's 1e999) can carry Infinity, which would poison every candle.
    price: float = Field(gt=0, allow_inf_nan=False)
    qty: float = Field(gt=0, allow_inf_nan=False)
    side: Literal["buy", "sell"]
    ord_type: Literal["market", "limit"] = "limit"
    timestamp: UtcDatetime
    ingested_at: UtcDatetime


MAX_TRADE_BATCH = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TradeBatch(OnMarket):
    """The value of a `trades` record: consecutive trades of one pair, in exchange order.

    One record per exchange message (or REST page chunk) rather than per trade: a stream worker pays a
    fixed cost per record, so batches are what lets one worker keep up with bursts (gap fills, replays).
    """

    trades: list[Trade] = Field(min_length=1, max_length=MAX_TRADE_BATCH)

    @model_validator(mode="after")
    def _one_market(self) -> TradeBatch:
        strangers = {t.market for t in self.trades} - {self.market}
        if strangers:
            raise ValueError(f"a batch of {self.market} holds trades of {sorted(strangers)}")
        return self


def trade_batches(trades: Iterable[Trade], max_size: int = MAX_TRADE_BATCH) -> list[TradeBatch]:
    """Groups trades per market (venue and pair), keeping their order, into batches of at most `max_size`."""
    by_market: dict[str, list[Trade]] = {}
    for trade in trades:
        by_market.setdefault(trade.market, []).append(trade)
    return [
        TradeBatch(exchange=group[0].exchange, pair=group[0].pair, trades=group[i : i + max_size])
        for group in by_market.values()
        for i in range(0, len(group), max_size)
    ]


class Candle(OnMarket):
    """A closed OHLCV candle for [window_start, window_end). `gap` marks a window without trades."""

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


class IndicatorRow(OnMarket):
    """Technical indicators for one closed candle; `warm_up` marks rows whose windows are not yet full."""

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

    @field_validator("source", "reason", "raw")
    @classmethod
    def _storable_text(cls, text: str) -> str:
        # PostgreSQL text cannot hold NUL: a payload carrying one would fail every write of its batch.
        return text.replace("\x00", "\\u0000")

    def store_key(self) -> str:
        """Identity of this letter in the store: the same letter read again (a replay of the dead-letter
        topic after a restart) is not stored twice. Migration 0006 computes the same digest in SQL."""
        micros = (self.at - EPOCH) // timedelta(microseconds=1)
        return hashlib.sha256(
            "\x1f".join((self.source, self.reason, self.raw, str(micros))).encode()
        ).hexdigest()
