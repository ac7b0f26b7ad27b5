"""Kraken REST public market data: `Trades` and `OHLC`, both directions, and an async client.

Response shapes (Kraken's): `{"error": [], "result": {"<PAIR NAME>": [rows...], "last": ...}}`.
Trades rows are `[price, volume, time, side b/s, type m/l, misc, trade_id]` with price and volume
as strings, time as float seconds and `last` as a nanosecond string to pass as the next `since`.
OHLC rows are `[time, open, high, low, close, vwap, volume, count]`; the last row is still forming.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from cryptopredict.models import Trade
from cryptopredict.venue_rest import OhlcRow, VenueRestClient, VenueRestError, json_object, shown

# Kraken's REST names use XBT for bitcoin and XDG for dogecoin.
_REST_ASSET = {"BTC": "XBT", "DOGE": "XDG"}


class KrakenRestError(VenueRestError):
    """Kraken answered with an error list (bad pair, rate limit in the body, ...)."""


def rest_pair(ws_pair: str) -> str:
    """`BTC/USD` -> `XBTUSD`: the altname that the REST `pair` parameter accepts."""
    base, quote = ws_pair.split("/")
    return _REST_ASSET.get(base, base) + _REST_ASSET.get(quote, quote)


def decode_payload(body: bytes) -> dict[str, Any]:
    """A response body as the JSON object Kraken answers with; anything else is a KrakenRestError."""
    return json_object(body, KrakenRestError)


def result_rows(payload: dict[str, Any]) -> tuple[list[Any], Any]:
    """Rows under the one pair key of `result`, and `last`."""
    if not isinstance(payload, dict):
        raise KrakenRestError(f"response is a JSON {type(payload).__name__}, not an object")
    if errors := payload.get("error"):
        text = ", ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
        raise KrakenRestError(f"Kraken answered with an error: {shown(text)}")
    result = payload.get("result")
    if not isinstance(result, dict) or "last" not in result:
        raise KrakenRestError("response has no result with last")
    keys = [k for k in result if k != "last"]
    if len(keys) != 1 or not isinstance(result[keys[0]], list):
        raise KrakenRestError(f"expected one pair in result, got {keys}")
    return result[keys[0]], result["last"]


def parse_trades_response(
    payload: dict[str, Any], ws_pair: str, ingested_at: datetime
) -> tuple[list[Trade], int]:
    rows, last = result_rows(payload)
    trades = []
    for row in rows:
        try:
            price, volume, ts, side, order_type, _misc, trade_id = row
            trades.append(
                Trade(
                    pair=ws_pair,
                    trade_id=trade_id,
                    price=float(price),
                    qty=float(volume),
                    side="buy" if side == "b" else "sell",
                    ord_type="market" if order_type == "m" else "limit",
                    timestamp=datetime.fromtimestamp(float(ts), tz=UTC),
                    ingested_at=ingested_at,
                )
            )
        # OverflowError: a number too large for a float, or a time outside the datetime range; OSError:
        # a time the platform's gmtime cannot convert.
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            raise KrakenRestError(f"malformed trade row {shown(row)}: {exc}") from exc
    return trades, _last(last)


def _last(last: Any) -> int:
    """`last` of a page: an integer (Trades: nanoseconds as a string, OHLC: seconds as a number)."""
    if isinstance(last, bool) or not isinstance(last, int | str):
        raise KrakenRestError(f"last is not an integer: {shown(last)}")
    try:
        return int(last)
    except ValueError as exc:
        raise KrakenRestError(f"last is not an integer: {shown(last)}") from exc


def trades_response(result_key: str, trades: Iterable[Trade], last_ns: int) -> dict[str, Any]:
    rows = [
        [
            # Shortest exact decimal, so a trade read back over REST equals the one streamed.
            repr(t.price),
            repr(t.qty),
            t.timestamp.timestamp(),
            "b" if t.side == "buy" else "s",
            "m" if t.ord_type == "market" else "l",
            "",
            t.trade_id,
        ]
        for t in trades
    ]
    return {"error": [], "result": {result_key: rows, "last": str(last_ns)}}


def to_ns(ts: datetime) -> int:
    return round(ts.timestamp() * 1_000_000) * 1000


@dataclass
class KrakenRestClient(VenueRestClient):
    """Pages public trades politely (VenueRestClient: one request per `min_interval_s`, 429 and 5xx
    retried); Kraken reports bad requests in the body, with 200."""

    venue = "kraken"
    error = KrakenRestError

    def _payload(self, path: str, response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        return decode_payload(response.content)

    async def trades_page(self, ws_pair: str, since_ns: int) -> tuple[list[Trade], int]:
        payload = await self.get("/0/public/Trades", {"pair": rest_pair(ws_pair), "since": str(since_ns)})
        return parse_trades_response(payload, ws_pair, datetime.now(UTC))

    async def trades_since(
        self, ws_pair: str, since_ns: int, until_ns: int | None = None
    ) -> AsyncIterator[tuple[list[Trade], int]]:
        """Pages of trades from `since_ns` (pass each page's `last` on); stops at an empty page, a
        page that does not advance, or past `until_ns`. Yields (trades, next_since)."""
        while True:
            trades, last = await self.trades_page(ws_pair, since_ns)
            if until_ns is not None:
                trades = [t for t in trades if to_ns(t.timestamp) < until_ns]
            yield trades, last
            if not trades or last <= since_ns or (until_ns is not None and last >= until_ns):
                return
            since_ns = last

    async def ohlc(self, ws_pair: str, interval_s: int, since_s: int) -> list[OhlcRow]:
        """The closed candles of `interval_s` (a whole number of minutes Kraken offers) that start at or after
        `since_s`, from Kraken's newest 720; the still-forming last row is left out."""
        if interval_s <= 0 or interval_s % 60:
            raise ValueError(f"Kraken's OHLC intervals are whole minutes, not {interval_s} s")
        # `since` is exclusive on Kraken: one second earlier includes the window starting at since_s.
        params = {"pair": rest_pair(ws_pair), "interval": str(interval_s // 60), "since": str(since_s - 1)}
        rows, last = parse_ohlc_response(await self.get("/0/public/OHLC", params))
        return [row for row in rows if since_s <= row.time <= last]


def _decimal_text(x: float) -> str:
    """Shortest exact text without an exponent, as Kraken writes prices ("0.00001", not "1e-05")."""
    from decimal import Decimal

    return format(Decimal(repr(x)), "f")


def ohlc_response(result_key: str, rows: Iterable[OhlcRow], last_s: int) -> dict[str, Any]:
    """Kraken's OHLC shape: `[time, open, high, low, close, vwap, volume, count]`, prices as strings,
    `last` = start of the last closed candle (the last row is still forming)."""
    table = [
        [
            r.time,
            *(_decimal_text(x) for x in (r.open, r.high, r.low, r.close, r.vwap)),
            f"{r.volume:.8f}",
            r.count,
        ]
        for r in rows
    ]
    return {"error": [], "result": {result_key: table, "last": last_s}}


def parse_ohlc_response(payload: dict[str, Any]) -> tuple[list[OhlcRow], int]:
    rows, last = result_rows(payload)
    try:
        parsed = [
            OhlcRow(int(t), float(o), float(h), float(lo), float(c), float(vw), float(v), int(n))
            for t, o, h, lo, c, vw, v, n in rows
        ]
    except (ValueError, TypeError, OverflowError) as exc:
        raise KrakenRestError(f"malformed OHLC rows: {exc}") from exc
    return parsed, _last(last)
