"""What every fuzz target checks, shared by the atheris targets (tests/fuzz/<target>.py) and the
hypothesis properties (test_properties.py): one function per parser, taking the raw input.

Each function feeds the input through the project's own parser and fails (AssertionError, or whatever
escapes the parser) unless the outcome is a valid result or a rejection of the project's own kind: a
dead letter with a reason, `MalformedMessage` or `KrakenRestError`. Parsed objects are checked against
their models and round-tripped through the project's serializer where it has one. The gRPC target's
invariant is in grpc_invariants.py (it imports the server, which is slow to import).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptopredict.feed_client import Rejected
from cryptopredict.kraken.client import KrakenTradeClient
from cryptopredict.kraken.protocol import MalformedMessage, parse_trades, trade_message
from cryptopredict.kraken.rest import (
    KrakenRestError,
    decode_payload,
    ohlc_response,
    parse_ohlc_response,
    parse_trades_response,
    trades_response,
)
from cryptopredict.models import NewsItem, Trade
from cryptopredict.news.sources import (
    FUTURE_SLACK,
    RAW_MAX,
    SUMMARY_MAX,
    TITLE_MAX,
    URL_MAX,
    parse_cryptopanic,
    parse_feed,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PAIRS = ("BTC/USD", "ETH/USD")
INT64_MAX = 2**63 - 1


def _check_trade(trade: Trade, pair: str | None = None) -> None:
    assert trade.pair in PAIRS if pair is None else trade.pair == pair, trade
    assert math.isfinite(trade.price) and trade.price > 0, trade
    assert math.isfinite(trade.qty) and trade.qty > 0, trade
    assert 0 <= trade.trade_id <= INT64_MAX, trade
    assert trade.timestamp.tzinfo is not None and trade.timestamp.utcoffset() == timedelta(0), trade
    # What the feed writes to Kafka reads back as the same trade.
    assert Trade.from_json(trade.to_json_bytes()) == trade


# --- Kraken WebSocket v2 ----------------------------------------------------------------------------


def exchange_message(data: bytes) -> list[Trade | Rejected]:
    """One raw WebSocket message through the feed's own handling: trades or dead letters, nothing else.
    Text frames arrive as str (always valid UTF-8), binary frames as bytes."""
    try:
        raw: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        raw = data
    client = KrakenTradeClient("ws://fuzz.invalid", PAIRS)
    events = client._handle(raw)
    assert isinstance(events, list)
    trades = [event for event in events if isinstance(event, Trade)]
    for event in events:
        assert isinstance(event, Trade | Rejected), event
        if isinstance(event, Rejected):
            assert isinstance(event.raw, str) and isinstance(event.reason, str) and event.reason
    for trade in trades:
        _check_trade(trade)
    if trades:
        # Serialized the way the replay exchange sends them, the accepted trades parse back unchanged.
        again = parse_trades(json.loads(trade_message("update", trades)), ingested_at=trades[0].ingested_at)
        assert again.rejected == [] and again.trades == trades, (again, trades)
    assert client.counts["trades"] == len(trades)
    return events


def trade_rows(message: Any) -> None:
    """`parse_trades` on any JSON value: a batch or MalformedMessage."""
    if not isinstance(message, dict):
        return
    try:
        batch = parse_trades(message, ingested_at=NOW)
    except MalformedMessage as exc:
        assert str(exc)
        return
    for trade in batch.trades:
        _check_trade(trade, pair=trade.pair)
    for row in batch.rejected:
        assert row.reason and isinstance(row.raw, str)


# --- Kraken REST ------------------------------------------------------------------------------------


def rest_page(data: bytes) -> None:
    """A REST response body through the client's decoding and the Trades and OHLC parsers: parsed rows
    or KrakenRestError."""
    try:
        payload = decode_payload(data)
    except KrakenRestError as exc:
        assert str(exc)
        return
    rest_payload(payload)


def rest_payload(payload: Any) -> None:
    try:
        trades, last = parse_trades_response(payload, "BTC/USD", NOW)
    except KrakenRestError as exc:
        assert str(exc)
    else:
        assert isinstance(last, int)
        for trade in trades:
            _check_trade(trade, pair="BTC/USD")
            assert trade.ingested_at == NOW
        # The replay exchange's REST answer of these trades parses back to the same trades.
        echoed, echoed_last = parse_trades_response(trades_response("XXBTZUSD", trades, last), "BTC/USD", NOW)
        assert echoed_last == last
        assert all(_same_rest_trade(a, b) for a, b in zip(echoed, trades, strict=True))
    try:
        rows, last_s = parse_ohlc_response(payload)
    except KrakenRestError as exc:
        assert str(exc)
    else:
        assert isinstance(last_s, int)
        again, _ = parse_ohlc_response(ohlc_response("XXBTZUSD", rows, last_s))
        assert [(r.time, r.count) for r in again] == [(r.time, r.count) for r in rows]


def _same_rest_trade(a: Trade, b: Trade) -> bool:
    """REST times are float seconds: exact to the microsecond from 1970 to 2100, the years trades are
    made in; further out a float's step is coarser, and the time may move by that step."""
    assert a.model_dump(exclude={"timestamp"}) == b.model_dump(exclude={"timestamp"}), (a, b)
    drift = abs((a.timestamp - b.timestamp).total_seconds())
    exact = REST_EXACT_FROM <= b.timestamp < REST_EXACT_UNTIL
    assert drift == 0 if exact else drift <= 1e-4, (a.timestamp, b.timestamp)
    return True


REST_EXACT_FROM = datetime(1970, 1, 1, tzinfo=UTC)
REST_EXACT_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)


# --- news -------------------------------------------------------------------------------------------


def _check_news(items: list[NewsItem], rejected: list[tuple[str, str]], source: str) -> None:
    for item in items:
        assert item.id.startswith((f"{source}:", "url:")), item.id
        assert item.title and len(item.title) <= TITLE_MAX, item.title
        assert len(item.summary) <= SUMMARY_MAX
        assert item.url.lower().startswith(("http://", "https://")) and len(item.url) <= URL_MAX, item.url
        assert item.published_at.utcoffset() == timedelta(0)
        assert item.published_at <= NOW + FUTURE_SLACK
        assert item.ingested_at == NOW and item.source == source
        # What the news workflow stores and sends reads back as the same item.
        assert NewsItem.from_json(item.to_json_bytes()) == item
    for raw, reason in rejected:
        assert isinstance(raw, str) and len(raw) <= RAW_MAX
        assert isinstance(reason, str) and reason


def cryptopanic_page(data: bytes) -> None:
    page = parse_cryptopanic(data, ingested_at=NOW, source="cryptopanic")
    _check_news(page.items, page.rejected, "cryptopanic")
    assert page.next_url is None or isinstance(page.next_url, str)


def news_feed(data: bytes) -> None:
    items, rejected = parse_feed(data, source="feed", ingested_at=NOW)
    _check_news(items, rejected, "feed")
    assert items or rejected or b"<" in data  # an unreadable document is one reject
