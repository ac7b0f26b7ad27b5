"""Hypothesis properties of the Coinbase parsers (test_properties.py's, for the second venue): any
WebSocket message gives trades, dead letters or a sequence gap, nothing else; trades the replay exchange
sends come out unchanged; any REST page gives trades and rejected rows or a CoinbaseRestError."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptopredict.coinbase.client import CoinbaseTradeClient, SequenceGap
from cryptopredict.coinbase.protocol import TRADE_FIELDS, market_trades_message, with_sequence
from cryptopredict.coinbase.rest import (
    CoinbaseRestError,
    decode_payload,
    parse_candles_response,
    parse_trades_response,
    trades_response,
)
from cryptopredict.feed_client import Rejected
from cryptopredict.models import Trade

pytestmark = pytest.mark.unit

PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PAIRS = ("BTC/USD", "ETH/USD")
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "BTC-USD",
            "ETH-USD",
            "BTCUSDT",
            "BUY",
            "SELL",
            "snapshot",
            "update",
            "2026-01-01T00:00:00Z",
            "1e999",
        ]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE_FIELDS = ("channel", "type", "sequence_num", "events", "message", "client_id", "timestamp")
CHANNELS = st.sampled_from(["market_trades", "heartbeats", "subscriptions", "status", "other"])


def handle(message: Any) -> list[Trade | Rejected]:
    """One raw message through the client's own handling: trades or dead letters, or a sequence gap."""
    client = CoinbaseTradeClient("ws://fuzz.invalid", PAIRS, max_future_s=1e9)
    try:
        events = client._handle(json.dumps(message))
    except SequenceGap as exc:
        assert str(exc) and client.counts["sequence_gaps"] == 1
        return []
    trades = [e for e in events if isinstance(e, Trade)]
    for event in events:
        assert isinstance(event, Trade | Rejected), event
        if isinstance(event, Rejected):
            assert isinstance(event.raw, str) and event.reason
    for trade in trades:
        assert trade.exchange == "coinbase" and trade.pair in PAIRS
        assert math.isfinite(trade.price) and trade.price > 0 and trade.qty > 0
        assert Trade.from_json(trade.to_json_bytes()) == trade
    ids = [(t.pair, t.trade_id) for t in trades]
    assert len(ids) == len(set(ids)), "a trade came out twice"
    assert client.counts["trades"] == len(trades) and client.counts["rejected"] == len(events) - len(trades)
    return events


@st.composite
def trade_lists(draw: st.DrawFn) -> list[Trade]:
    ids = sorted(draw(st.sets(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=5)))
    moments = st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    )
    prices = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False).filter(
        lambda x: x > 0
    )
    return [
        Trade(
            exchange="coinbase",
            pair=draw(st.sampled_from(PAIRS)),
            trade_id=trade_id,
            price=draw(prices),
            qty=draw(prices),
            side=draw(st.sampled_from(["buy", "sell"])),
            timestamp=draw(moments),
            ingested_at=NOW,
        )
        for trade_id in ids
    ]


def _without_ingested_at(trades: list[Any]) -> list[dict[str, Any]]:
    return sorted((t.model_dump(exclude={"ingested_at"}) for t in trades), key=lambda t: t["trade_id"])


@PROPERTY
@given(trade_lists(), st.sampled_from(["snapshot", "update"]))
def test_sent_trades_come_out_of_the_client_unchanged(trades: list[Trade], kind: str) -> None:
    events = handle(json.loads(with_sequence(market_trades_message(kind, trades, NOW), 0)))
    assert all(isinstance(e, Trade) for e in events), events
    assert _without_ingested_at(events) == _without_ingested_at(trades)


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), JSON),
    CHANNELS,
    st.integers(min_value=-1, max_value=2) | JSON,
)
def test_any_message_gives_trades_dead_letters_or_a_gap(
    message: dict[str, Any], channel: str, number: Any
) -> None:
    handle(message)
    handle(message | {"channel": channel, "sequence_num": number})


@PROPERTY
@given(
    st.lists(
        st.fixed_dictionaries(
            {}, optional={f: JSON | st.sampled_from(["1", "BTC-USD", "BUY"]) for f in TRADE_FIELDS}
        )
        | JSON,
        max_size=4,
    ),
    st.sampled_from(["snapshot", "update", "bogus"]) | JSON,
)
def test_trade_rows_of_any_shape_give_trades_or_dead_letters(rows: list[Any], kind: Any) -> None:
    handle({"channel": "market_trades", "sequence_num": 0, "events": [{"type": kind, "trades": rows}]})


@PROPERTY
@given(trade_lists(), st.lists(JSON, max_size=3), JSON)
def test_any_rest_page_gives_trades_and_rejects_or_a_rest_error(
    trades: list[Trade], junk_rows: list[Any], candles: Any
) -> None:
    payload = trades_response(trades)
    payload["trades"] += junk_rows
    parsed, rejected = parse_trades_response(decode_payload(json.dumps(payload).encode()), NOW)
    assert _without_ingested_at(parsed) == _without_ingested_at(trades)
    assert len(rejected) == len(junk_rows)
    assert all(r.reason for r in rejected)
    try:
        rows = parse_candles_response({"candles": candles})
    except CoinbaseRestError as exc:
        assert str(exc)
    else:
        assert [r.time for r in rows] == sorted(r.time for r in rows)
