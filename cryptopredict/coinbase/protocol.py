"""Coinbase Advanced Trade WebSocket market data, both directions: the `market_trades`, `heartbeats`,
`status` and `subscriptions` channels and `error` messages.

A channel message is an envelope `{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}`.
`sequence_num` counts the messages of one connection from 0, every channel together, so a skipped number
means messages lost on that connection. Errors are `{"type": "error", "message": ...}`, without one.

Coinbase's `side` of a market trade is the side of the maker, the resting order. The project's
`Trade.side` is the taker's (the aggressor, as Kraken reports it), so `BUY` becomes `sell` and `SELL`
becomes `buy`. Coinbase does not say which order type the taker used: trades carry `Trade`'s default.
Prices, sizes and trade ids are strings; trade ids are per-product increasing integers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from cryptopredict.kraken.protocol import MalformedMessage, RejectedRow, format_timestamp
from cryptopredict.models import Trade
from cryptopredict.topics import Exchange
from cryptopredict.venues import UnknownSymbol, project_pair, venue_symbol

COINBASE: Exchange = "coinbase"
TRADE_FIELDS = ("trade_id", "product_id", "price", "size", "side", "time")
# The taker's side from the maker's (see the module's docstring), and back.
TAKER_SIDE: dict[str, Literal["buy", "sell"]] = {"BUY": "sell", "SELL": "buy"}
MAKER_SIDE = {"buy": "SELL", "sell": "BUY"}
MAX_TRADE_ID_DIGITS = 19  # int64, what Trade.trade_id holds


@dataclass(frozen=True)
class MarketTrades:
    """The trades of one `market_trades` message (every event of it) and its rejected rows or events."""

    trades: list[Trade]
    rejected: list[RejectedRow]


def subscribe_request(channel: str, product_ids: Iterable[str] = (), kind: str = "subscribe") -> str:
    request: dict[str, Any] = {"type": kind, "channel": channel}
    if product_ids:
        request["product_ids"] = list(product_ids)
    return json.dumps(request)


def subscribe_requests(product_ids: Iterable[str]) -> list[str]:
    """Heartbeats (the watchdog's pulse), status, then `market_trades` one product per request: a product
    the venue refuses then fails alone, and the others are subscribed."""
    products = list(product_ids)
    return [
        subscribe_request("heartbeats"),
        subscribe_request("status", products),
        *(subscribe_request("market_trades", [product]) for product in products),
    ]


def sequence_num(message: Mapping[str, Any]) -> int | None:
    """The connection's message number; None for an `error` message, which has none."""
    if "sequence_num" not in message:
        if message.get("type") == "error":
            return None
        raise MalformedMessage("message has no sequence_num")
    number = message["sequence_num"]
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise MalformedMessage(f"sequence_num is not a non-negative integer: {_shown(number)}")
    return number


def parse_market_trades(message: Mapping[str, Any], ingested_at: datetime) -> MarketTrades:
    """Trades of a `market_trades` message. A malformed event or row is rejected on its own, with its
    reason, so the valid trades of the same message still flow; a malformed envelope raises."""
    events = message.get("events")
    if not isinstance(events, list):
        raise MalformedMessage("market_trades message needs an events list")
    trades, rejected = [], []
    for event in events:
        if (
            not isinstance(event, dict)
            or event.get("type") not in ("snapshot", "update")
            or not isinstance(event.get("trades"), list)
        ):
            rejected.append(
                RejectedRow(_json(event), "market_trades event needs type snapshot|update and a trades list")
            )
            continue
        for row in event["trades"]:
            try:
                trades.append(parse_trade_row(row, ingested_at))
            except MalformedMessage as exc:
                rejected.append(RejectedRow(_json(row), str(exc)))
    return MarketTrades(trades, rejected)


def parse_trade_row(row: Any, ingested_at: datetime) -> Trade:
    """One trade row (the WebSocket's and REST's are alike) as a Coinbase `Trade` of the project's pair."""
    if not isinstance(row, dict):
        raise MalformedMessage("trade row is not an object")
    missing = [f for f in TRADE_FIELDS if f not in row]
    if missing:
        raise MalformedMessage(f"trade row misses field {missing[0]!r}")
    for field in TRADE_FIELDS:
        if not isinstance(row[field], str):
            raise MalformedMessage(f"invalid trade: {field} is not a string: {_shown(row[field])}")
    trade_id = row["trade_id"]
    if not (trade_id.isascii() and trade_id.isdigit() and len(trade_id) <= MAX_TRADE_ID_DIGITS):
        raise MalformedMessage(f"invalid trade: trade_id is not an integer: {_shown(trade_id)}")
    try:
        pair = project_pair(COINBASE, row["product_id"])
    except UnknownSymbol as exc:
        raise MalformedMessage(f"unknown product id {_shown(row['product_id'])}: {exc}") from exc
    price, size = (_decimal(row, field) for field in ("price", "size"))
    side = TAKER_SIDE.get(row["side"])
    if side is None:
        raise MalformedMessage(f"invalid trade: side is not BUY or SELL: {_shown(row['side'])}")
    try:
        return Trade(
            exchange=COINBASE,
            pair=pair,
            trade_id=int(trade_id),
            price=price,
            qty=size,
            side=side,
            timestamp=parse_time(row["time"]),
            ingested_at=ingested_at,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = {"qty": "size"}.get(str(error["loc"][0]), str(error["loc"][0])) if error["loc"] else "trade"
        raise MalformedMessage(f"invalid trade: {field}: {error['msg']}") from exc


def _decimal(row: dict[str, Any], field: str) -> float:
    try:
        return float(row[field])
    except ValueError as exc:
        raise MalformedMessage(f"invalid trade: {field} is not a number: {_shown(row[field])}") from exc


def parse_time(text: str) -> datetime:
    """RFC 3339 with a zone (Coinbase writes up to nanoseconds; microseconds are kept)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedMessage(f"invalid trade: time is not RFC 3339: {_shown(text)}") from exc
    if moment.tzinfo is None:
        raise MalformedMessage(f"invalid trade: time has no zone: {_shown(text)}")
    return moment


def parse_subscriptions(message: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the connection is subscribed to now: channel -> product ids."""
    events = message.get("events")
    if not isinstance(events, list) or not events or not isinstance(events[-1], dict):
        raise MalformedMessage("subscriptions message needs an events list")
    current = events[-1].get("subscriptions")
    if not isinstance(current, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in current.values()
    ):
        raise MalformedMessage("subscriptions event needs channel -> list of product ids")
    return {str(channel): list(ids) for channel, ids in current.items()}


def parse_status(message: Mapping[str, Any]) -> dict[str, str]:
    """Product id -> status (`online`, `offline`, `delisted`, ...) of a `status` message."""
    events = message.get("events")
    if not isinstance(events, list):
        raise MalformedMessage("status message needs an events list")
    statuses = {}
    for event in events:
        products = event.get("products") if isinstance(event, dict) else None
        if not isinstance(products, list):
            raise MalformedMessage("status event needs a products list")
        for product in products:
            if not isinstance(product, dict) or not isinstance(product.get("id"), str):
                raise MalformedMessage(f"status product without an id: {_shown(product)}")
            statuses[product["id"]] = str(product.get("status", "unknown"))
    return statuses


# --- what the venue sends (the replay exchange speaks it) -------------------------------------------
# Channel messages are built without `sequence_num`, starting with `{"channel"`; the connection that
# sends one numbers it (with_sequence), since the number belongs to the connection, not the message.


def trade_row(trade: Trade) -> dict[str, str]:
    return {
        "trade_id": str(trade.trade_id),
        "product_id": venue_symbol(COINBASE, trade.pair),
        # Shortest exact decimal, so a trade read back equals the one sent.
        "price": repr(trade.price),
        "size": repr(trade.qty),
        "side": MAKER_SIDE[trade.side],
        "time": format_timestamp(trade.timestamp),
    }


def _channel_message(channel: str, events: list[Any], now: datetime) -> str:
    return json.dumps(
        {"channel": channel, "client_id": "", "timestamp": format_timestamp(now), "events": events}
    )


def market_trades_message(kind: str, trades: Iterable[Trade], now: datetime) -> str:
    """Newest trade first, as Coinbase sends them."""
    rows = [trade_row(t) for t in sorted(trades, key=lambda t: (t.timestamp, t.trade_id), reverse=True)]
    return _channel_message("market_trades", [{"type": kind, "trades": rows}], now)


def heartbeats_message(counter: int, now: datetime) -> str:
    return _channel_message(
        "heartbeats", [{"current_time": format_timestamp(now), "heartbeat_counter": str(counter)}], now
    )


def subscriptions_message(subscriptions: Mapping[str, Iterable[str]], now: datetime) -> str:
    current = {channel: list(ids) for channel, ids in subscriptions.items()}
    return _channel_message("subscriptions", [{"subscriptions": current}], now)


def status_message(kind: str, statuses: Mapping[str, str], now: datetime) -> str:
    products = [
        {"product_type": "SPOT", "id": product, "status": status, "status_message": ""}
        for product, status in statuses.items()
    ]
    return _channel_message("status", [{"type": kind, "products": products}], now)


def error_message(text: str) -> str:
    return json.dumps({"type": "error", "message": text})


def with_sequence(message: str, number: int) -> str:
    """A channel message built above, numbered for its connection."""
    return f'{{"sequence_num":{number},{message[1:]}'


def _json(value: Any) -> str:
    return json.dumps(value)


def _shown(value: Any) -> str:
    """A bounded repr of what the venue sent, for a reason."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
