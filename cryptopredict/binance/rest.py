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

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from cryptopredict.binance.protocol import BINANCE, decimal_text, from_ms, to_ms
from cryptopredict.kraken.rest import OhlcRow
from cryptopredict.models import Trade
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


class BinanceRestError(RuntimeError):
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
            raise BinanceRestError(f"malformed trade row {_shown(row)}: {exc!r}") from exc
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
            raise BinanceRestError(f"malformed kline {_shown(row)}: {exc!r}") from exc
    return rows


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _error_text(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return _shown(response.text)
    if isinstance(body, dict) and "msg" in body:
        return f"{body.get('code', '?')} {_shown(body['msg'])}"
    return _shown(body)


@dataclass
class BinanceRestClient:
    """Pages public trades politely: at most one request per `min_interval_s`; when the used request
    weight reaches `weight_budget` of the minute's limit it waits for the next minute; 429 is retried
    after its Retry-After, 418 (a ban) after at least `ban_backoff_s`, 5xx and transport errors with
    capped exponential delays and jitter."""

    base_url: str
    min_interval_s: float = 0.25
    max_retries: int = 8
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0
    weight_limit: int = 6000
    weight_budget: float = 0.8
    ban_backoff_s: float = 120.0
    requests: int = 0
    throttled: int = 0
    banned: int = 0
    used_weight: int = 0
    transport: httpx.AsyncBaseTransport | None = None  # another way to reach the server (tests)

    def __post_init__(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=self.transport
        )
        self._next_request = 0.0  # monotonic time before which no request goes out

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        for attempt in range(self.max_retries + 1):
            wait = self._next_request - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_request = time.monotonic() + self.min_interval_s
            self.requests += 1
            try:
                response = await self._client.get(path, params=params)
            except httpx.TransportError as exc:
                delay = self._backoff(attempt)
                logger.warning("binance REST %s failed (%s); retrying in %.1fs", path, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._note_weight(response)
            status = response.status_code
            if status in (418, 429) or status >= 500:
                delay = self._retry_after(response) or self._backoff(attempt)
                if status == 418:
                    self.banned += 1
                    delay = max(delay, self.ban_backoff_s)
                self.throttled += status == 429
                logger.warning("binance REST %s answered %d; retrying in %.1fs", path, status, delay)
                await asyncio.sleep(delay)
                continue
            if status != 200:
                raise BinanceRestError(f"{path} answered {status}: {_error_text(response)}")
            try:
                return json.loads(response.content)
            except (ValueError, RecursionError) as exc:
                raise BinanceRestError(f"{path} answered something that is not JSON: {exc}") from exc
        raise BinanceRestError(f"{path} failed after {self.max_retries + 1} attempts")

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

    def _backoff(self, attempt: int) -> float:
        base = max(self.min_interval_s, 0.1)
        return float(min(self.max_backoff_s, base * 2**attempt) * random.uniform(0.5, 1.0))

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        try:
            return float(response.headers["Retry-After"])
        except (KeyError, ValueError):
            return None

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
            raise BinanceRestError(f"time answered {_shown(payload)}")
        try:
            return int(payload["serverTime"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BinanceRestError(f"time answered {_shown(payload)}") from exc

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
