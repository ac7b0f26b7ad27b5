"""Kraken WebSocket v2 trade-channel messages, both directions.

Parsing turns an exchange message into `Trade`s or raises `MalformedMessage` with a reason, which
the feed sends to the dead-letter topic together with the raw payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cryptopredict.models import Trade


class MalformedMessage(ValueError):
    """An exchange message that cannot be turned into trades; the text is the reason."""


@dataclass(frozen=True)
class RejectedRow:
    raw: str
    reason: str


@dataclass(frozen=True)
class TradeBatch:
    kind: str  # "snapshot" or "update"
    trades: list[Trade]
    rejected: list[RejectedRow]


def subscribe_request(pairs: Iterable[str], req_id: int = 1, snapshot: bool = True) -> str:
    return json.dumps(
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": list(pairs), "snapshot": snapshot},
            "req_id": req_id,
        }
    )


def format_timestamp(ts: datetime) -> str:
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to the four digits ISO 8601 needs.
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def trade_payload(trade: Trade) -> dict[str, Any]:
    return {
        "symbol": trade.pair,
        "side": trade.side,
        "price": trade.price,
        "qty": trade.qty,
        "ord_type": trade.ord_type,
        "trade_id": trade.trade_id,
        "timestamp": format_timestamp(trade.timestamp),
    }


def trade_message(kind: str, trades: Iterable[Trade]) -> str:
    return json.dumps({"channel": "trade", "type": kind, "data": [trade_payload(t) for t in trades]})


def decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    # ValueError covers bad JSON, bad UTF-8 and integers too long to convert; RecursionError deep nesting.
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"invalid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise MalformedMessage("message is not a JSON object")
    return message


def parse_trades(message: dict[str, Any], ingested_at: datetime) -> TradeBatch:
    """Trades of a `trade` channel message. A malformed row is rejected on its own, with its reason,
    so the valid trades of the same message still flow; a malformed envelope raises."""
    kind = message.get("type")
    data = message.get("data")
    if kind not in ("snapshot", "update") or not isinstance(data, list):
        raise MalformedMessage("trade message needs type snapshot|update and a data list")
    trades, rejected = [], []
    for row in data:
        try:
            trades.append(parse_trade_row(row, ingested_at))
        except MalformedMessage as exc:
            rejected.append(RejectedRow(json.dumps(row), str(exc)))
    return TradeBatch(kind=kind, trades=trades, rejected=rejected)


def parse_trade_row(row: Any, ingested_at: datetime) -> Trade:
    if not isinstance(row, dict):
        raise MalformedMessage("trade row is not an object")
    missing = [f for f in ("symbol", "trade_id", "price", "qty", "side", "timestamp") if f not in row]
    if missing:
        raise MalformedMessage(f"trade row misses field {missing[0]!r}")
    # Kraken sends JSON numbers; a string here means a broken producer, not a number to coerce.
    for field in ("price", "qty", "trade_id"):
        if isinstance(row[field], bool) or not isinstance(row[field], int | float):
            raise MalformedMessage(f"invalid trade: {field} is not a number: {row[field]!r}")
    try:
        return Trade(
            pair=row["symbol"],
            trade_id=row["trade_id"],
            price=row["price"],
            qty=row["qty"],
            side=row["side"],
            ord_type=row.get("ord_type", "limit"),
            timestamp=row["timestamp"],
            ingested_at=ingested_at,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise MalformedMessage(f"invalid trade: {'.'.join(map(str, error['loc']))}: {error['msg']}") from exc
