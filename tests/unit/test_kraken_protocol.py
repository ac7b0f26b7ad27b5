import json
from datetime import UTC, datetime

import pytest

from cryptopredict.kraken.protocol import MalformedMessage, decode, parse_trades, trade_message
from cryptopredict.models import Trade

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_trade_message_round_trip():
    t = Trade(
        pair="BTC/USD",
        trade_id=7,
        price=42000.5,
        qty=0.01,
        side="buy",
        ord_type="market",
        timestamp=NOW,
        ingested_at=NOW,
    )
    batch = parse_trades(decode(trade_message("update", [t, t])), ingested_at=NOW)
    assert batch.kind == "update" and batch.trades == [t, t]


def test_kraken_sample_message_parses():
    raw = json.dumps(
        {
            "channel": "trade",
            "type": "update",
            "data": [
                {
                    "symbol": "BTC/USD",
                    "side": "sell",
                    "price": 64000.1,
                    "qty": 0.5,
                    "ord_type": "limit",
                    "trade_id": 123,
                    "timestamp": "2026-01-01T12:00:00.123456Z",
                }
            ],
        }
    )
    (trade,) = parse_trades(decode(raw), ingested_at=NOW).trades
    assert trade.timestamp == NOW and trade.price == 64000.1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"channel":"trade","type":"weird","data":[]}', "type snapshot|update"),
        ('{"channel":"trade","type":"update","data":{}}', "data list"),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(MalformedMessage, match=reason):
        parse_trades(decode(raw), ingested_at=NOW)


GOOD_ROW = {
    "symbol": "BTC/USD",
    "side": "buy",
    "price": 100.0,
    "qty": 1.0,
    "ord_type": "limit",
    "trade_id": 1,
    "timestamp": "2026-01-01T00:00:00.000001Z",
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price": None}, "price is not a number"),
        ({"price": "100.0"}, "price is not a number"),
        ({"qty": -1.0}, "qty"),
        ({"price": 0}, "price"),
        ({"side": "hold"}, "side"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"symbol": "btcusd"}, "pair"),
    ],
)
def test_bad_rows_are_rejected_alone_and_good_rows_flow(change, reason):
    bad = GOOD_ROW | change
    message = {"channel": "trade", "type": "update", "data": [GOOD_ROW, bad, GOOD_ROW | {"trade_id": 2}]}
    batch = parse_trades(message, ingested_at=NOW)
    assert [t.trade_id for t in batch.trades] == [1, 2]
    (rejected,) = batch.rejected
    assert reason in rejected.reason and json.loads(rejected.raw) == bad


def test_row_missing_a_field_names_it():
    row = {k: v for k, v in GOOD_ROW.items() if k != "qty"}
    batch = parse_trades({"channel": "trade", "type": "update", "data": [row]}, ingested_at=NOW)
    assert batch.rejected[0].reason == "trade row misses field 'qty'"
