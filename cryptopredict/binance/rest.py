"""Binance spot REST public market data: `historicalTrades` and `klines`, both directions, and an async client.

`GET /api/v3/historicalTrades?symbol=BTCUSDT&fromId=n&limit=1000` answers the trades with id >= fromId
in id order, `[{"id","price","qty","quoteQty","time","isBuyerMaker","isBestMatch"}, ...]` (prices and
quantities as decimal strings, time in ms). Trade ids, not aggregate-trade ids, are the stream's `t`.
`GET /api/v3/klines?symbol=&interval=1m&startTime=&endTime=&limit=` answers rows
`[openTime, open, high, low, close, volume, closeTime, quoteVolume, count, takerBuyBase, takerBuyQuote, "0"]`,
the last one possibly still forming. Errors come as `{"code": -1121, "msg": "Invalid symbol."}` with a 4xx.

Every answer carries `X-MBX-USED-WEIGHT-1M`, the request weight this IP used in the current minute;
past the limit Binance answers 429 with Retry-After, and an IP that goes on gets 418 (banned for a while).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from cryptopredict.binance.protocol import BINANCE, decimal_text, from_ms, to_ms
from cryptopredict.models import Trade
from cryptopredict.venue_rest import OhlcRow, VenueRestClient, VenueRestError, retry_after, shown
from cryptopredict.venues import venue_symbol

logger = logging.getLogger(__name__)

TRADES_LIMIT = 1000
KLINES_LIMIT = 1000
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Binance's kline interval names by length in seconds.
KLINE_INTERVALS = {
    60: "1m",
    180: "3m",
    300: "5m",
    900: "15m",
    1800: "30m",
    3600: "1h",
    7200: "2h",
    14400: "4h",
    21600: "6h",
    28800: "8h",
    43200: "12h",
    86400: "1d",
    259200: "3d",
    604800: "1w",
}


class BinanceRestError(VenueRestError):
    """Binance answered with an error, or with something that is not the expected shape."""


def kline_interval(interval_s: int) -> str:
    try:
        return KLINE_INTERVALS[interval_s]
    except KeyError:
        raise ValueError(f"Binance has no {interval_s}s klines; one of {sorted(KLINE_INTERVALS)}") from None


def historical_trade(trade: Trade) -> dict[str, Any]:
    """A trade as historicalTrades lists it (the replay exchange's side)."""
    return {
        "id": trade.trade_id,
        "price": decimal_text(trade.price),
        "qty": decimal_text(trade.qty),
        "quoteQty": decimal_text(trade.price * trade.qty),
        "time": to_ms(trade.timestamp),
        "isBuyerMaker": trade.side == "sell",
        "isBestMatch": True,
    }


def parse_trades_response(payload: Any, pair: str, ingested_at: datetime) -> list[Trade]:
    if not isinstance(payload, list):
        raise BinanceRestError(f"historicalTrades answered a JSON {type(payload).__name__}, not a list")
    trades = []
    for row in payload:
        try:
            if isinstance(row["id"], bool) or not isinstance(row["id"], int):
                raise TypeError(f"id is not an integer: {row['id']!r}")
            trades.append(
                Trade(
                    exchange=BINANCE,
                    pair=pair,
                    trade_id=row["id"],
                    price=float(row["price"]),
                    qty=float(row["qty"]),
                    side="sell" if row["isBuyerMaker"] else "buy",
                    ord_type="market",
                    timestamp=from_ms(int(row["time"])),
                    ingested_at=ingested_at,
                )
            )
        except (KeyError, ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            raise BinanceRestError(f"malformed trade row {shown(row)}: {exc!r}") from exc
    return trades


def kline_row(row: OhlcRow, interval_s: int) -> list[Any]:
    """A candle as klines lists it (the replay exchange's side); the taker-buy columns are not modelled."""
    quote = row.vwap * row.volume
    open_ms = row.time * 1000
    return [
        open_ms,
        *(decimal_text(x) for x in (row.open, row.high, row.low, row.close)),
        f"{row.volume:.8f}",
        open_ms + interval_s * 1000 - 1,
        f"{quote:.8f}",
        row.count,
        "0",
        "0",
        "0",
    ]


def parse_klines_response(payload: Any) -> list[OhlcRow]:
    """Klines as the OHLC rows the Kraken REST client reads (vwap = quote volume / volume)."""
    if not isinstance(payload, list):
        raise BinanceRestError(f"klines answered a JSON {type(payload).__name__}, not a list")
    rows = []
    for row in payload:
        try:
            open_ms, o, h, lo, c, volume, _close_ms, quote, count = row[:9]
            close, vol = float(c), float(volume)
            vwap = float(quote) / vol if vol > 0 else close
            rows.append(
                OhlcRow(int(open_ms) // 1000, float(o), float(h), float(lo), close, vwap, vol, int(count))
            )
        except (ValueError, TypeError, OverflowError) as exc:
            raise BinanceRestError(f"malformed kline {shown(row)}: {exc!r}") from exc
    return rows


def _error_text(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return shown(response.text)
    if isinstance(body, dict) and "msg" in body:
        return f"{body.get('code', '?')} {shown(body['msg'])}"
    return shown(body)


@dataclass
class BinanceRestClient(VenueRestClient):
    """Pages public trades politely (VenueRestClient: one request per `min_interval_s`, 429, 5xx and
    failed connections retried); when the used request weight reaches `weight_budget` of the minute's
    limit it waits for the next minute, and 418 (a ban) is retried after at least `ban_backoff_s`."""

    min_interval_s: float = 0.25
    weight_limit: int = 6000
    weight_budget: float = 0.8
    ban_backoff_s: float = 120.0
    banned: int = 0
    used_weight: int = 0

    venue = "binance"
    error = BinanceRestError
    backoff_floor_s = 0.1

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Every answer tells the weight used; a ban (418) is waited out like a 429, for longer."""
        self._note_weight(response)
        if response.status_code != 418:
            return super()._retry_delay(response, attempt)
        self.banned += 1
        return max(retry_after(response) or self._backoff(attempt), self.ban_backoff_s)

    def _payload(self, path: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise BinanceRestError(f"{path} answered {response.status_code}: {_error_text(response)}")
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise BinanceRestError(f"{path} answered something that is not JSON: {exc}") from exc

    def _note_weight(self, response: httpx.Response) -> None:
        try:
            self.used_weight = int(response.headers[WEIGHT_HEADER])
        except (KeyError, ValueError):
            return
        if self.used_weight >= self.weight_budget * self.weight_limit:
            # The weight counts per wall-clock minute: wait until the next one begins.
            pause = 60.0 - time.time() % 60.0
            logger.warning(
                "binance REST weight %d of %d used; pausing %.1fs", self.used_weight, self.weight_limit, pause
            )
            self._next_request = max(self._next_request, time.monotonic() + pause)

    async def trades_page(self, pair: str, from_id: int, limit: int = TRADES_LIMIT) -> list[Trade]:
        params = {"symbol": venue_symbol(BINANCE, pair), "fromId": from_id, "limit": limit}
        payload = await self.get("/api/v3/historicalTrades", params)
        return parse_trades_response(payload, pair, datetime.now(UTC))

    async def trades_from(
        self, pair: str, from_id: int, until_id: int | None = None
    ) -> AsyncIterator[list[Trade]]:
        """Pages of trades with ids from `from_id` (and below `until_id`), in id order; stops at a
        short page (the present), an empty one, or one that does not advance."""
        while until_id is None or from_id < until_id:
            limit = TRADES_LIMIT if until_id is None else min(TRADES_LIMIT, until_id - from_id)
            trades = await self.trades_page(pair, from_id, limit)
            if until_id is not None:
                trades = [t for t in trades if t.trade_id < until_id]
            yield trades
            if len(trades) < limit or trades[-1].trade_id < from_id:
                return
            from_id = trades[-1].trade_id + 1

    async def server_time_ms(self) -> int:
        payload = await self.get("/api/v3/time", {})
        if not isinstance(payload, dict) or isinstance(payload.get("serverTime"), bool):
            raise BinanceRestError(f"time answered {shown(payload)}")
        try:
            return int(payload["serverTime"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BinanceRestError(f"time answered {shown(payload)}") from exc

    async def ohlc(self, pair: str, interval_s: int, since_s: int) -> list[OhlcRow]:
        """Closed candles of `interval_s` starting at or after `since_s`, oldest first (as
        KrakenRestClient.ohlc), paged 1000 at a time up to the venue's now; one still forming is left out."""
        params: dict[str, Any] = {
            "symbol": venue_symbol(BINANCE, pair),
            "interval": kline_interval(interval_s),
            "limit": KLINES_LIMIT,
        }
        now_ms = await self.server_time_ms()
        rows: list[OhlcRow] = []
        start_ms = since_s * 1000
        while start_ms < now_ms:
            page = parse_klines_response(await self.get("/api/v3/klines", params | {"startTime": start_ms}))
            rows += [r for r in page if r.time * 1000 >= start_ms and (r.time + interval_s) * 1000 <= now_ms]
            if len(page) < KLINES_LIMIT or page[-1].time * 1000 < start_ms:
                break
            start_ms = (page[-1].time + interval_s) * 1000
        return rows


def klines_response(rows: Iterable[OhlcRow], interval_s: int) -> list[list[Any]]:
    return [kline_row(r, interval_s) for r in rows]
