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
class TradeBatch:
    kind: str  # "snapshot" or "update"
    trades: list[Trade]


def subscribe_request(pairs: Iterable[str], req_id: int = 1, snapshot: bool = True) -> str:
    return json.dumps(
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": list(pairs), "snapshot": snapshot},
            "req_id": req_id,
        }
    )


def format_timestamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"invalid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise MalformedMessage("message is not a JSON object")
    return message


def parse_trades(message: dict[str, Any], ingested_at: datetime) -> TradeBatch:
    """Trades of a `trade` channel message; all or nothing, so one bad row sends the whole message
    to the dead-letter topic where a person can see it intact."""
    kind = message.get("type")
    data = message.get("data")
    if kind not in ("snapshot", "update") or not isinstance(data, list):
        raise MalformedMessage("trade message needs type snapshot|update and a data list")
    trades = []
    for row in data:
        if not isinstance(row, dict):
            raise MalformedMessage("trade row is not an object")
        try:
            trades.append(
                Trade(
                    pair=row["symbol"],
                    trade_id=row["trade_id"],
                    price=row["price"],
                    qty=row["qty"],
                    side=row["side"],
                    ord_type=row.get("ord_type", "limit"),
                    timestamp=row["timestamp"],
                    ingested_at=ingested_at,
                )
            )
        except KeyError as exc:
            raise MalformedMessage(f"trade row misses field {exc.args[0]!r}") from exc
        except ValidationError as exc:
            raise MalformedMessage(
                f"invalid trade: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from exc
    return TradeBatch(kind=kind, trades=trades)
