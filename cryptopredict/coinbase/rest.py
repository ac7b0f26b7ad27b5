"""Coinbase Advanced Trade public REST market data: server time, market trades (gap fills) and candles
(the OHLC cross-check), both directions, and a polite async client.

- `GET /api/v3/brokerage/time` -> `{"iso", "epochSeconds", "epochMillis"}`: the venue's clock. Paging
  ends at the venue's now, not ours (the replay exchange's clock is not the wall clock either).
- `GET /api/v3/brokerage/market/products/{product_id}/ticker?limit=&start=&end=` ->
  `{"trades": [...], "best_bid", "best_ask"}`: rows like the WebSocket's `market_trades` rows, newest
  first, at most `limit`; `start`/`end` are unix seconds. It pages by time only, so a gap is read from
  its end backwards and de-duplicated by trade id.
- `GET /api/v3/brokerage/market/products/{product_id}/candles?start=&end=&granularity=ONE_MINUTE` ->
  `{"candles": [{"start", "low", "high", "open", "close", "volume"}, ...]}`, newest first, at most 350,
  strings throughout; the newest may still be forming.
Errors are HTTP statuses with `{"error", "message"}`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from cryptopredict.coinbase.protocol import COINBASE, parse_trade_row, trade_row
from cryptopredict.kraken.protocol import MalformedMessage, RejectedRow
from cryptopredict.models import Trade
from cryptopredict.venue_rest import OhlcRow, VenueRestClient, VenueRestError, json_object
from cryptopredict.venues import venue_symbol

logger = logging.getLogger(__name__)

TIME_PATH = "/api/v3/brokerage/time"
PRODUCTS_PATH = "/api/v3/brokerage/market/products"
TRADES_LIMIT = 1000  # the most one market-trades request returns
MAX_CANDLES = 350  # the most candles one request may span
GRANULARITIES = {
    60: "ONE_MINUTE",
    300: "FIVE_MINUTE",
    900: "FIFTEEN_MINUTE",
    1800: "THIRTY_MINUTE",
    3600: "ONE_HOUR",
    7200: "TWO_HOUR",
    21600: "SIX_HOUR",
    86400: "ONE_DAY",
}
INTERVALS = {name: seconds for seconds, name in GRANULARITIES.items()}


class CoinbaseRestError(VenueRestError):
    """No usable answer, for now: retries used up, the connection failed or the body is not JSON."""


class CoinbaseRestRefused(CoinbaseRestError):
    """The venue refused the request itself (a 4xx other than 429: unknown product, bad arguments);
    asking again will not help."""


def trades_path(pair: str) -> str:
    return f"{PRODUCTS_PATH}/{venue_symbol(COINBASE, pair)}/ticker"


def candles_path(pair: str) -> str:
    return f"{PRODUCTS_PATH}/{venue_symbol(COINBASE, pair)}/candles"


def decode_payload(body: bytes) -> dict[str, Any]:
    """A response body as the JSON object Coinbase answers with; anything else is a CoinbaseRestError."""
    return json_object(body, CoinbaseRestError)


def parse_trades_response(
    payload: dict[str, Any], ingested_at: datetime
) -> tuple[list[Trade], list[RejectedRow]]:
    """A market-trades page: its trades oldest first, and its malformed rows (kept, not fatal)."""
    rows = payload.get("trades")
    if not isinstance(rows, list):
        raise CoinbaseRestError("market trades response has no trades list")
    trades, rejected = [], []
    for row in rows:
        try:
            trades.append(parse_trade_row(row, ingested_at))
        except MalformedMessage as exc:
            rejected.append(RejectedRow(json.dumps(row), f"REST market trades: {exc}"))
    trades.sort(key=lambda t: (t.pair, t.trade_id))
    return trades, rejected


def trades_response(trades: Iterable[Trade]) -> dict[str, Any]:
    """The venue's shape of a market-trades page (newest first), bid and ask around the last price."""
    rows = [trade_row(t) for t in sorted(trades, key=lambda t: (t.timestamp, t.trade_id), reverse=True)]
    last = float(rows[0]["price"]) if rows else None
    return {
        "trades": rows,
        "best_bid": repr(last) if last is not None else "",
        "best_ask": repr(last) if last is not None else "",
    }


def parse_candles_response(payload: dict[str, Any]) -> list[OhlcRow]:
    """Candles oldest first. Coinbase reports neither VWAP nor a trade count: `vwap` is NaN, `count` 0."""
    rows = payload.get("candles")
    if not isinstance(rows, list):
        raise CoinbaseRestError("candles response has no candles list")
    try:
        candles = [
            OhlcRow(
                int(row["start"]),
                float(row["open"]),
                float(row["high"]),
                float(row["low"]),
                float(row["close"]),
                math.nan,
                float(row["volume"]),
                0,
            )
            for row in rows
        ]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CoinbaseRestError(f"malformed candles: {exc}") from exc
    return sorted(candles, key=lambda c: c.time)


def candles_response(rows: Iterable[OhlcRow]) -> dict[str, Any]:
    return {
        "candles": [
            {
                "start": str(r.time),
                "low": repr(r.low),
                "high": repr(r.high),
                "open": repr(r.open),
                "close": repr(r.close),
                "volume": repr(r.volume),
            }
            for r in sorted(rows, key=lambda r: r.time, reverse=True)
        ]
    }


def parse_server_time(payload: dict[str, Any]) -> float:
    """The venue's clock in unix seconds."""
    try:
        if "epochMillis" in payload:
            return int(payload["epochMillis"]) / 1000
        return float(payload["epochSeconds"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CoinbaseRestError(f"server time response without epochSeconds: {exc}") from exc


def time_response(now: datetime) -> dict[str, Any]:
    millis = round(now.timestamp() * 1000)
    return {
        "iso": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "epochSeconds": str(millis // 1000),
        "epochMillis": str(millis),
    }


@dataclass
class CoinbaseRestClient(VenueRestClient):
    """Asks politely (VenueRestClient: one request per `min_interval_s`, 429, 5xx and failed connections
    retried); another 4xx is the venue refusing the request, CoinbaseRestRefused."""

    min_interval_s: float = 0.2
    page_limit: int = TRADES_LIMIT
    truncated_pages: int = 0

    venue = "coinbase"
    error = CoinbaseRestError
    backoff_floor_s = 0.05

    def _payload(self, path: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise CoinbaseRestRefused(f"{path} answered {response.status_code}: {response.text[:200]}")
        return decode_payload(response.content)

    async def server_time(self) -> float:
        return parse_server_time(await self.get(TIME_PATH, {}))

    async def trades_page(
        self, pair: str, start_s: int, end_s: int, limit: int | None = None
    ) -> tuple[list[Trade], list[RejectedRow]]:
        """Up to `limit` of the newest trades in [start_s, end_s], oldest first."""
        params = {"limit": limit or self.page_limit, "start": str(start_s), "end": str(end_s)}
        payload = await self.get(trades_path(pair), params)
        return parse_trades_response(payload, datetime.now(UTC))

    async def trades_since(
        self, pair: str, since: datetime, until_s: float | None = None
    ) -> AsyncIterator[tuple[list[Trade], list[RejectedRow]]]:
        """Every trade from `since` (its whole second) to `until_s` (unix seconds, the venue's now if not
        given), oldest first, in pages of at most `page_limit`, each trade once. The endpoint pages by
        time only: pages are read from the end backwards, each ending at the second of the oldest trade
        before it (that second is read again, so trades sharing it are not lost), and put in order once
        the gap is read."""
        start_s = math.floor(since.timestamp())
        end_s = math.floor(until_s if until_s is not None else await self.server_time()) + 1
        collected: dict[int, Trade] = {}
        rejected: list[RejectedRow] = []
        while True:
            trades, bad = await self.trades_page(pair, start_s, end_s)
            rejected += bad
            for trade in trades:
                collected.setdefault(trade.trade_id, trade)
            if len(trades) + len(bad) < self.page_limit or not trades:
                break
            next_end = math.floor(min(t.timestamp for t in trades).timestamp()) + 1
            if next_end >= end_s:
                # A whole page inside one second: time cannot page past it. What else that second held
                # is lost to this fill; said loudly, and counted.
                self.truncated_pages += 1
                logger.error(
                    "coinbase REST: more than %d %s trades in the second %d; the rest of it is not filled",
                    self.page_limit,
                    pair,
                    end_s - 1,
                )
                next_end = end_s - 1
            if next_end <= start_s:
                break
            end_s = next_end
        ordered = sorted(collected.values(), key=lambda t: t.trade_id)
        if not ordered and rejected:
            yield [], rejected
        for i in range(0, len(ordered), self.page_limit):
            yield ordered[i : i + self.page_limit], rejected if i == 0 else []

    async def ohlc(self, pair: str, interval_s: int, since_s: int) -> list[OhlcRow]:
        """Closed candles of `interval_s` starting at or after `since_s`, oldest first (as
        KrakenRestClient.ohlc). Candles are read in windows of at most 350 up to the venue's now; one
        still forming is left out. Coinbase sends no candle for an interval without trades."""
        granularity = GRANULARITIES.get(interval_s)
        if granularity is None:
            raise ValueError(f"Coinbase has no {interval_s}s candles; one of {sorted(GRANULARITIES)}")
        now_s = await self.server_time()
        rows: dict[int, OhlcRow] = {}
        start = since_s
        while start < now_s:
            end = min(start + (MAX_CANDLES - 1) * interval_s, math.ceil(now_s))
            params = {"start": str(start), "end": str(end), "granularity": granularity}
            for row in parse_candles_response(await self.get(candles_path(pair), params)):
                rows[row.time] = row
            start = end  # the candle at `end` is read again, whether or not `end` is inclusive
        return [rows[t] for t in sorted(rows) if t >= since_s and t + interval_s <= now_s]
