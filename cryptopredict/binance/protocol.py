"""Binance spot WebSocket trade streams, both directions.

Raw streams (`/ws/<symbol>@trade`, or `/ws` plus SUBSCRIBE) send each event as is; combined streams
(`/stream?streams=btcusdt@trade/ethusdt@trade`) wrap it as `{"stream": "btcusdt@trade", "data": {...}}`.
A trade event is `{"e":"trade","E":ms,"s":"BTCUSDT","t":id,"p":"price","q":"qty","T":ms,"m":bool,"M":bool}`:
one trade per message, `t` the symbol's trade id (contiguous, so a jump is a lost message), `T` the
trade time and `m` true when the buyer was the maker, so the taker sold. Live SUBSCRIBE requests are
answered `{"result": null, "id": n}` or `{"error": {"code": c, "msg": "..."}, "id": n}`.

Parsing turns a message into a `Trade`, a `SubscribeReply`, or raises `MalformedMessage` with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from pydantic import ValidationError

from cryptopredict.kraken.protocol import MalformedMessage, decode
from cryptopredict.models import Trade
from cryptopredict.venues import UnknownSymbol, project_pair, venue_symbol

BINANCE: Final = "binance"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRADE_FIELDS = ("s", "t", "p", "q", "T", "m")


@dataclass(frozen=True)
class SubscribeReply:
    """The answer to a SUBSCRIBE (or other method) request: `error` is None on success."""

    id: Any
    error: str | None


def stream_name(pair: str) -> str:
    """`BTC/USDT` -> `btcusdt@trade`."""
    return f"{venue_symbol(BINANCE, pair).lower()}@trade"


@lru_cache(maxsize=4096)
def pair_of(symbol: str) -> str:
    """The project pair of a Binance symbol (cached: every trade message names one)."""
    return project_pair(BINANCE, symbol)


def subscribe_request(pairs: list[str], request_id: int, method: str = "SUBSCRIBE") -> str:
    return json.dumps({"method": method, "params": [stream_name(p) for p in pairs], "id": request_id})


def decimal_text(x: float) -> str:
    """Shortest exact text without an exponent, as Binance writes prices and quantities."""
    return format(Decimal(repr(x)), "f")


def to_ms(ts: datetime) -> int:
    """Milliseconds since the epoch, rounded down: a trade keeps its window however it is rounded."""
    return (ts - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """Exact: a float of ms / 1000 is within a microsecond's fraction of it, and the result is rounded."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def trade_event(trade: Trade, event_ms: int | None = None) -> dict[str, Any]:
    """The stream event of a trade (the replay exchange's side)."""
    trade_ms = to_ms(trade.timestamp)
    return {
        "e": "trade",
        "E": trade_ms if event_ms is None else event_ms,
        "s": venue_symbol(BINANCE, trade.pair),
        "t": trade.trade_id,
        "p": decimal_text(trade.price),
        "q": decimal_text(trade.qty),
        "T": trade_ms,
        "m": trade.side == "sell",
        "M": True,
    }


def trade_message(trade: Trade, combined: bool) -> str:
    event = trade_event(trade)
    if combined:
        return json.dumps({"stream": stream_name(trade.pair), "data": event})
    return json.dumps(event)


def parse_message(raw: str | bytes, ingested_at: datetime) -> Trade | SubscribeReply:
    """A trade of a raw or combined stream, or a reply to a request."""
    message = decode(raw)
    if "stream" in message and "data" in message:
        return _unwrap(message, ingested_at)
    if "id" in message and ("result" in message or "error" in message):
        return _reply(message)
    return parse_trade_event(message, ingested_at)


def _unwrap(message: dict[str, Any], ingested_at: datetime) -> Trade:
    stream, data = message["stream"], message["data"]
    if not isinstance(stream, str) or not isinstance(data, dict):
        raise MalformedMessage("combined stream message needs a stream name and a data object")
    trade = parse_trade_event(data, ingested_at)
    if stream.lower() != f"{str(data['s']).lower()}@trade":
        raise MalformedMessage(f"stream {stream!r} carries a trade of {data['s']!r}")
    return trade


def _reply(message: dict[str, Any]) -> SubscribeReply:
    error = message.get("error")
    if error is None:
        return SubscribeReply(message["id"], None)
    if isinstance(error, dict):
        text = f"{error.get('code', '?')} {error.get('msg', 'no reason given')}"
    else:
        text = str(error)
    return SubscribeReply(message["id"], text)


def parse_trade_event(event: dict[str, Any], ingested_at: datetime) -> Trade:
    kind = event.get("e")
    if kind != "trade":
        raise MalformedMessage(f"not a trade event: e={kind!r}")
    missing = [f for f in TRADE_FIELDS if f not in event]
    if missing:
        raise MalformedMessage(f"trade event misses field {missing[0]!r}")
    # Binance sends prices and quantities as decimal strings, ids and times as integers, `m` as a bool.
    for field in ("t", "T"):
        if isinstance(event[field], bool) or not isinstance(event[field], int):
            raise MalformedMessage(f"invalid trade: {field} is not an integer: {_shown(event[field])}")
    if not isinstance(event["m"], bool):
        raise MalformedMessage(f"invalid trade: m is not a boolean: {_shown(event['m'])}")
    symbol = event["s"]
    if not isinstance(symbol, str):
        raise MalformedMessage(f"invalid trade: s is not a symbol: {_shown(symbol)}")
    try:
        pair = pair_of(symbol)
    except UnknownSymbol as exc:
        raise MalformedMessage(f"unknown symbol: {exc}") from exc
    price, qty = _decimal(event, "p"), _decimal(event, "q")
    try:
        timestamp = from_ms(event["T"])
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedMessage(f"invalid trade: T is out of range: {event['T']}") from exc
    try:
        return Trade(
            exchange=BINANCE,
            pair=pair,
            trade_id=event["t"],
            price=price,
            qty=qty,
            side="sell" if event["m"] else "buy",
            # The stream does not say how the taker's order was placed; what takes liquidity is a market order.
            ord_type="market",
            timestamp=timestamp,
            ingested_at=ingested_at,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise MalformedMessage(f"invalid trade: {'.'.join(map(str, error['loc']))}: {error['msg']}") from exc


def _decimal(event: dict[str, Any], field: str) -> float:
    value = event[field]
    if not isinstance(value, str):
        raise MalformedMessage(f"invalid trade: {field} is not a decimal string: {_shown(value)}")
    try:
        return float(value)
    except ValueError as exc:
        raise MalformedMessage(f"invalid trade: {field} is not a number: {_shown(value)}") from exc


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."
