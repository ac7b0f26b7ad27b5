"""Pure parts of the feed: backoff, de-duplication, rejection rules, REST response parsing."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.feed_client import Rejected, backoff_delay
from cryptopredict.kraken.client import KrakenTradeClient
from cryptopredict.kraken.rest import (
    KrakenRestError,
    parse_trades_response,
    rest_pair,
    to_ns,
    trades_response,
)
from cryptopredict.models import Trade

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC).replace(microsecond=0)


def trade(trade_id: int, pair: str = "BTC/USD", ts: datetime = NOW) -> Trade:
    return Trade(
        pair=pair, trade_id=trade_id, price=100.0, qty=0.5, side="sell", timestamp=ts, ingested_at=ts
    )


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 30.0, rng) for a in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    assert len({round(d, 6) for d in delays[8:]}) > 1  # jitter: capped delays still differ


def test_accept_drops_repeats_and_keeps_order_per_pair():
    client = KrakenTradeClient("ws://unused", ["BTC/USD", "ETH/USD"])
    snapshot = [trade(i) for i in range(1, 51)]
    assert [t.trade_id for t in client._accept(snapshot)] == list(range(1, 51))
    again = client._accept([trade(i) for i in range(40, 56)] + [trade(3, "ETH/USD")])
    assert [(t.pair, t.trade_id) for t in again] == [("BTC/USD", i) for i in range(51, 56)] + [("ETH/USD", 3)]
    assert client.counts["duplicates_dropped"] == 11
    assert client.last_trade_id == {"BTC/USD": 55, "ETH/USD": 3}


def test_accept_rejects_unknown_symbols_and_future_timestamps():
    client = KrakenTradeClient("ws://unused", ["BTC/USD"], max_future_s=60)
    # From the clock now, not NOW: the module may have been imported minutes before this test runs.
    future = datetime.now(UTC) + timedelta(minutes=5)
    events = client._accept([trade(1, "SOL/USD"), trade(2, ts=future), trade(3)])
    assert [type(e) for e in events] == [Rejected, Rejected, Trade]
    assert "unknown symbol SOL/USD" in events[0].reason and "future" in events[1].reason


def test_failed_subscription_is_reported_for_that_pair_only():
    client = KrakenTradeClient("ws://unused", ["BTC/USD", "XYZ/USD"])
    ok = json.dumps(
        {"method": "subscribe", "success": True, "result": {"channel": "trade", "symbol": "BTC/USD"}}
    )
    bad = json.dumps(
        {
            "method": "subscribe",
            "success": False,
            "error": "Currency pair not supported XYZ/USD",
            "symbol": "XYZ/USD",
        }
    )
    assert client._handle(ok) == []
    (rejected,) = client._handle(bad)
    assert client.subscribed == {"BTC/USD"} and "XYZ/USD" in client.failed_pairs
    assert "subscription failed for XYZ/USD" in rejected.reason


def test_status_changes_are_exposed():
    client = KrakenTradeClient("ws://unused", ["BTC/USD"])
    for system in ("online", "maintenance", "online"):
        client._handle(json.dumps({"channel": "status", "type": "update", "data": [{"system": system}]}))
    assert client.status == "online" and client.counts["status_maintenance"] == 1


def test_rest_trades_round_trip_and_errors():
    trades = [trade(i, ts=NOW + timedelta(seconds=i)) for i in (7, 8)]
    payload = trades_response("XXBTZUSD", trades, to_ns(trades[-1].timestamp))
    parsed, last = parse_trades_response(json.loads(json.dumps(payload)), "BTC/USD", NOW)
    assert [(t.trade_id, t.price, t.qty, t.side, t.timestamp) for t in parsed] == [
        (t.trade_id, t.price, t.qty, t.side, t.timestamp) for t in trades
    ]
    assert last == to_ns(trades[-1].timestamp)
    with pytest.raises(KrakenRestError, match="Unknown asset pair"):
        parse_trades_response({"error": ["EQuery:Unknown asset pair"]}, "BTC/USD", NOW)
    with pytest.raises(KrakenRestError, match="malformed trade row"):
        parse_trades_response({"error": [], "result": {"X": [["abc"]], "last": "1"}}, "BTC/USD", NOW)
    assert rest_pair("BTC/USD") == "XBTUSD" and rest_pair("ETH/USD") == "ETHUSD"


def test_heartbeats_pongs_and_unknown_channels_are_counted_not_published():
    client = KrakenTradeClient("ws://unused", ["BTC/USD"])
    assert client._handle('{"channel":"heartbeat"}') == []
    assert client._handle('{"method":"pong","req_id":1,"time_in":"x","time_out":"y"}') == []
    assert client._handle('{"channel":"book","type":"update","data":[]}') == []
    assert client.counts["heartbeats"] == 1 and client.counts["rejected"] == 0


def test_a_bad_json_frame_is_rejected_with_its_raw_text():
    client = KrakenTradeClient("ws://unused", ["BTC/USD"])
    (rejected,) = client._handle(b"\xff{oops")
    assert isinstance(rejected, Rejected) and "invalid JSON" in rejected.reason and "oops" in rejected.raw
