"""Coinbase Advanced Trade: message parsing, the client's sequence, subscription, de-duplication and
status rules, and the REST client's paging, candles and rate-limit handling (against a stand-in HTTP
transport: the venue's side, not our code, is what is stood in for)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cryptopredict.coinbase.client import CoinbaseTradeClient, SequenceGap
from cryptopredict.coinbase.protocol import (
    MalformedMessage,
    error_message,
    heartbeats_message,
    market_trades_message,
    parse_market_trades,
    parse_trade_row,
    status_message,
    subscribe_requests,
    subscriptions_message,
    with_sequence,
)
from cryptopredict.coinbase.rest import (
    CoinbaseRestClient,
    CoinbaseRestError,
    CoinbaseRestRefused,
    candles_response,
    parse_candles_response,
    parse_trades_response,
    trades_response,
)
from cryptopredict.feed_client import Rejected
from cryptopredict.models import Trade
from cryptopredict.simulators.coinbase import candle_rows
from cryptopredict.venue_rest import OhlcRow

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC).replace(microsecond=0)
PAIRS = ["BTC/USD", "ETH/USD"]


def trade(trade_id: int, pair: str = "BTC/USD", ts: datetime = NOW, side: str = "buy") -> Trade:
    return Trade(
        exchange="coinbase",
        pair=pair,
        trade_id=trade_id,
        price=100.5,
        qty=0.25,
        side=side,
        timestamp=ts,
        ingested_at=NOW,
    )


def numbered(messages: list[str]) -> list[str]:
    return [with_sequence(m, i) for i, m in enumerate(messages)]


# --- protocol -----------------------------------------------------------------------------------------


def test_a_coinbase_sample_message_parses_with_the_taker_side():
    raw = {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": "2026-02-09T20:19:35.39625135Z",
        "sequence_num": 0,
        "events": [
            {
                "type": "snapshot",
                "trades": [
                    {
                        "trade_id": "000000012",
                        "product_id": "ETH-USD",
                        "price": "1260.01",
                        "size": "0.3",
                        "side": "BUY",
                        "time": "2026-02-09T20:19:35.123456789Z",
                    },
                    {
                        "trade_id": "11",
                        "product_id": "BTC-USD",
                        "price": "64000",
                        "size": "1e-3",
                        "side": "SELL",
                        "time": "2026-02-09T20:19:35Z",
                    },
                ],
            }
        ],
    }
    batch = parse_market_trades(raw, ingested_at=NOW)
    assert batch.rejected == []
    eth, btc = batch.trades
    assert (eth.exchange, eth.pair, eth.trade_id, eth.price, eth.qty) == (
        "coinbase",
        "ETH/USD",
        12,
        1260.01,
        0.3,
    )
    # The maker bought, so the taker sold.
    assert eth.side == "sell" and btc.side == "buy"
    assert eth.timestamp == datetime(2026, 2, 9, 20, 19, 35, 123456, tzinfo=UTC)
    assert btc.market == "coinbase:BTC/USD" and btc.qty == 0.001


def test_trades_sent_by_the_replay_shapes_parse_back_unchanged():
    trades = [trade(1, side="buy"), trade(2, "ETH/USD", side="sell"), trade(3, ts=NOW + timedelta(seconds=1))]
    message = json.loads(with_sequence(market_trades_message("update", trades, NOW), 4))
    assert message["sequence_num"] == 4
    assert [row["trade_id"] for row in message["events"][0]["trades"]] == ["3", "2", "1"]  # newest first
    parsed = parse_market_trades(message, ingested_at=NOW).trades
    assert sorted(parsed, key=lambda t: t.trade_id) == trades


GOOD_ROW = {
    "trade_id": "1",
    "product_id": "BTC-USD",
    "price": "100.0",
    "size": "1.0",
    "side": "BUY",
    "time": "2026-01-01T00:00:00.000001Z",
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price": 100.0}, "price is not a string"),
        ({"price": "abc"}, "price is not a number"),
        ({"price": "0"}, "price"),
        ({"price": "1e999"}, "price"),
        ({"size": "-1"}, "size"),
        ({"side": "HOLD"}, "side is not BUY or SELL"),
        ({"time": "yesterday"}, "time is not RFC 3339"),
        ({"time": "2026-01-01T00:00:00"}, "time has no zone"),
        ({"trade_id": "abc-123"}, "trade_id is not an integer"),
        ({"trade_id": "99999999999999999999"}, "trade_id is not an integer"),
        ({"trade_id": 7}, "trade_id is not a string"),
        ({"product_id": "BTCUSDT"}, "unknown product id 'BTCUSDT'"),
        ({"product_id": "btc-usd"}, "unknown product id"),
    ],
)
def test_bad_rows_are_rejected_alone_and_good_rows_flow(change, reason):
    bad = GOOD_ROW | change
    message = {"events": [{"type": "update", "trades": [GOOD_ROW, bad, GOOD_ROW | {"trade_id": "2"}]}]}
    batch = parse_market_trades(message, ingested_at=NOW)
    assert [t.trade_id for t in batch.trades] == [1, 2]
    (rejected,) = batch.rejected
    assert reason in rejected.reason and json.loads(rejected.raw) == bad


def test_a_row_missing_a_field_names_it_and_a_bad_event_is_rejected_alone():
    row = {k: v for k, v in GOOD_ROW.items() if k != "size"}
    with pytest.raises(MalformedMessage, match="misses field 'size'"):
        parse_trade_row(row, NOW)
    message = {"events": [{"type": "weird", "trades": []}, {"type": "update", "trades": [GOOD_ROW]}]}
    batch = parse_market_trades(message, ingested_at=NOW)
    assert len(batch.trades) == 1 and "type snapshot|update" in batch.rejected[0].reason
    with pytest.raises(MalformedMessage, match="events list"):
        parse_market_trades({"events": {}}, ingested_at=NOW)


def test_subscribe_requests_ask_each_product_alone():
    requests = [json.loads(r) for r in subscribe_requests(["BTC-USD", "ETH-USD"])]
    assert requests == [
        {"type": "subscribe", "channel": "heartbeats"},
        {"type": "subscribe", "channel": "status", "product_ids": ["BTC-USD", "ETH-USD"]},
        {"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD"]},
        {"type": "subscribe", "channel": "market_trades", "product_ids": ["ETH-USD"]},
    ]


# --- client -------------------------------------------------------------------------------------------


def test_sequence_numbers_count_the_messages_of_one_connection():
    client = CoinbaseTradeClient("ws://unused", PAIRS)
    first, second, third = numbered(
        [
            heartbeats_message(1, NOW),
            market_trades_message("update", [trade(5)], NOW),
            heartbeats_message(2, NOW),
        ]
    )
    assert client._handle(first) == []
    assert [t.trade_id for t in client._handle(second)] == [5]
    # The same number again (or an older one): a dead letter, and the numbering goes on where it was.
    (repeated,) = client._handle(second)
    assert isinstance(repeated, Rejected) and "sequence_num 1 out of order: 2 was due" in repeated.reason
    assert client._handle(third) == []
    # A skipped number: messages were lost on this connection.
    with pytest.raises(SequenceGap, match="sequence_num 5 where 3 was due: 2 lost"):
        client._handle(with_sequence(heartbeats_message(3, NOW), 5))
    assert client.counts["sequence_gaps"] == 1 and client.counts["messages_lost"] == 2
    assert client.counts["sequence_out_of_order"] == 1 and client.counts["heartbeats"] == 2


def test_messages_without_a_usable_sequence_number_are_dead_letters_but_errors_need_none():
    client = CoinbaseTradeClient("ws://unused", PAIRS)
    (missing,) = client._handle(heartbeats_message(1, NOW))
    assert "no sequence_num" in missing.reason
    (negative,) = client._handle(json.dumps({"channel": "heartbeats", "sequence_num": -1}))
    assert "non-negative integer" in negative.reason
    (bad_json,) = client._handle(b"\xff{oops")
    assert "invalid JSON" in bad_json.reason and "oops" in bad_json.raw
    (error,) = client._handle(error_message("slow consumer"))
    assert error.reason == "venue error: slow consumer"
    assert client._handle(with_sequence(heartbeats_message(1, NOW), 0)) == []


def test_trades_are_accepted_in_id_order_and_repeats_dropped():
    client = CoinbaseTradeClient("ws://unused", PAIRS)
    newest_first = [trade(i) for i in range(50, 0, -1)]
    assert [t.trade_id for t in client._accept(newest_first)] == list(range(1, 51))
    again = client._accept([trade(i) for i in range(55, 39, -1)] + [trade(3, "ETH/USD")])
    assert [(t.pair, t.trade_id) for t in again] == [("ETH/USD", 3)] + [("BTC/USD", i) for i in range(51, 56)]
    assert client.counts["duplicates_dropped"] == 11
    assert client.last_trade_id == {"BTC/USD": 55, "ETH/USD": 3}


def test_trades_of_products_not_subscribed_or_from_the_future_are_dead_letters():
    client = CoinbaseTradeClient("ws://unused", ["BTC/USD"], max_future_s=60)
    future = datetime.now(UTC) + timedelta(minutes=5)
    events = client._accept([trade(1, "SOL/USD"), trade(2, ts=future), trade(3)])
    assert [type(e) for e in events] == [Rejected, Rejected, Trade]
    assert "product SOL-USD, which this connection did not subscribe" in events[0].reason
    assert "future" in events[1].reason


def test_a_refused_product_is_reported_for_that_product_only():
    client = CoinbaseTradeClient("ws://unused", ["BTC/USD", "BTC/USDC"])
    (refused,) = client._handle(error_message("Failed to subscribe to market_trades for BTC-USDC"))
    assert (
        refused.reason
        == "subscription failed for BTC/USDC: Failed to subscribe to market_trades for BTC-USDC"
    )
    assert client.failed_pairs == {"BTC/USDC": "Failed to subscribe to market_trades for BTC-USDC"}
    subscriptions = subscriptions_message({"market_trades": ["BTC-USD"], "heartbeats": ["heartbeats"]}, NOW)
    assert client._handle(with_sequence(subscriptions, 0)) == []
    assert client.subscribed == {"BTC/USD"}


def test_status_follows_the_products_read():
    client = CoinbaseTradeClient("ws://unused", ["BTC/USD"])
    for i, status in enumerate(("online", "offline", "online")):
        message = status_message("update", {"BTC-USD": status, "DOGE-EUR": "delisted"}, NOW)
        assert client._handle(with_sequence(message, i)) == []
    assert client.status == "online" and client.counts["status_offline"] == 1
    assert client.counts["status_online"] == 2


def test_a_pair_coinbase_cannot_name_is_a_configuration_error():
    with pytest.raises(ValueError, match="not a pair like BTC/USD"):
        CoinbaseTradeClient("ws://unused", ["btcusd"])


# --- REST ---------------------------------------------------------------------------------------------


def test_rest_pages_parse_oldest_first_and_keep_bad_rows_as_rejects():
    trades = [trade(i, ts=NOW + timedelta(seconds=i)) for i in (7, 8, 9)]
    payload = json.loads(json.dumps(trades_response(trades)))
    assert [row["trade_id"] for row in payload["trades"]] == ["9", "8", "7"]
    payload["trades"].append(GOOD_ROW | {"price": "abc"})
    parsed, rejected = parse_trades_response(payload, NOW)
    assert [t.trade_id for t in parsed] == [7, 8, 9]
    assert (parsed[0].price, parsed[0].side) == (100.5, "buy")
    assert len(rejected) == 1 and rejected[0].reason.startswith("REST market trades: invalid trade: price")
    with pytest.raises(CoinbaseRestError, match="no trades list"):
        parse_trades_response({"error": "NOT_FOUND"}, NOW)


def test_candles_round_trip_without_vwap_or_count():
    rows = [OhlcRow(60 * i, 1.0 + i, 2.0 + i, 0.5, 1.5, 0.0, 3.25, 4) for i in (1, 2)]
    parsed = parse_candles_response(json.loads(json.dumps(candles_response(rows))))
    assert [(r.time, r.open, r.high, r.low, r.close, r.volume, r.count) for r in parsed] == [
        (r.time, r.open, r.high, r.low, r.close, r.volume, 0) for r in rows
    ]
    assert all(math.isnan(r.vwap) for r in parsed)
    with pytest.raises(CoinbaseRestError, match="malformed candles"):
        parse_candles_response({"candles": [{"start": "x"}]})


class Venue:
    """The venue's side of HTTP for the REST client: server time and market trades paged like Coinbase's
    (newest `limit` of [start, end), newest first), candles, and statuses to answer with first."""

    def __init__(
        self, trades: list[Trade], now_s: float, statuses: list[int] = (), refuse_trades: bool = False
    ):
        self.trades, self.now_s, self.statuses = trades, now_s, list(statuses)
        self.refuse_trades = refuse_trades
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.statuses:
            status = self.statuses.pop(0)
            headers = {"Retry-After": "0.01"} if status == 429 else {}
            return httpx.Response(status, json={"error": "X", "message": f"status {status}"}, headers=headers)
        params = request.url.params
        if request.url.path.endswith("/time"):
            return httpx.Response(
                200, json={"epochSeconds": str(int(self.now_s)), "epochMillis": str(int(self.now_s * 1000))}
            )
        if request.url.path.endswith("/candles"):
            start, end = int(params["start"]), int(params["end"])
            return httpx.Response(200, json=candles_response(candle_rows(self.trades, 60, start, end)))
        if self.refuse_trades:
            return httpx.Response(404, json={"error": "NOT_FOUND", "message": "product not found"})
        start, end, limit = float(params["start"]), float(params["end"]), int(params["limit"])
        window = [t for t in self.trades if start <= t.timestamp.timestamp() < end]
        return httpx.Response(200, json=trades_response(window[-limit:]))


def rest_client(venue: Venue, page_limit: int = 1000) -> CoinbaseRestClient:
    client = CoinbaseRestClient(
        "http://venue.invalid", min_interval_s=0.0, page_limit=page_limit, max_backoff_s=0.01
    )
    client._client = httpx.AsyncClient(base_url="http://venue.invalid", transport=httpx.MockTransport(venue))
    return client


async def test_a_gap_is_read_backwards_by_time_and_comes_out_in_order_once():
    start = NOW - timedelta(minutes=10)
    # Three trades a second for 100 seconds: pages of 10 end inside seconds, which are read again.
    trades = [trade(i, ts=start + timedelta(seconds=i // 3, milliseconds=i % 3)) for i in range(300)]
    venue = Venue(trades, now_s=(start + timedelta(seconds=200)).timestamp())
    client = rest_client(venue, page_limit=10)
    pages = [page async for page in client.trades_since("BTC/USD", trades[40].timestamp)]
    got = [t.trade_id for page, _ in pages for t in page]
    assert got == list(range(39, 300))  # the whole second of trade 40, and everything after it
    assert all(len(page) <= 10 for page, _ in pages) and client.truncated_pages == 0
    ends = [int(r.url.params["end"]) for r in venue.requests if "end" in r.url.params]
    assert ends == sorted(ends, reverse=True) and ends[0] == math.floor(venue.now_s) + 1


async def test_a_second_with_more_trades_than_a_page_is_said_and_counted():
    trades = [trade(i, ts=NOW - timedelta(seconds=30)) for i in range(25)]
    client = rest_client(Venue(trades, now_s=NOW.timestamp()), page_limit=10)
    got = [
        t.trade_id
        async for page, _ in client.trades_since("BTC/USD", NOW - timedelta(minutes=1))
        for t in page
    ]
    assert got == list(range(15, 25)) and client.truncated_pages == 1


async def test_throttling_is_waited_out_and_a_refusal_is_final():
    venue = Venue([], now_s=NOW.timestamp(), statuses=[429, 503, 429])
    client = rest_client(venue)
    assert await client.server_time() == NOW.timestamp()
    assert client.throttled == 2 and client.requests == 4
    with pytest.raises(CoinbaseRestRefused, match="404"):
        await rest_client(Venue([], 0.0, statuses=[404])).server_time()
    exhausted = rest_client(Venue([], 0.0, statuses=[500] * 9))
    exhausted.max_retries = 2
    with pytest.raises(CoinbaseRestError, match="after 3 attempts"):
        await exhausted.server_time()


async def test_ohlc_returns_closed_candles_from_since_in_windows_of_350():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    trades = [trade(i, ts=base + timedelta(seconds=30 * i)) for i in range(2000)]  # 1,000 minutes
    now = base + timedelta(minutes=900, seconds=20)  # minute 900 still forming
    venue = Venue([t for t in trades if t.timestamp <= now], now_s=now.timestamp())
    rows = await rest_client(venue).ohlc("BTC/USD", 60, int((base + timedelta(minutes=100)).timestamp()))
    assert [r.time for r in rows] == [int((base + timedelta(minutes=m)).timestamp()) for m in range(100, 900)]
    assert all(r.volume == 0.5 and r.count == 0 for r in rows)
    windows = [
        (int(r.url.params["start"]), int(r.url.params["end"]))
        for r in venue.requests
        if "granularity" in r.url.params
    ]
    assert len(windows) == 3 and all((end - start) // 60 + 1 <= 350 for start, end in windows)
    with pytest.raises(ValueError, match="no 120s candles"):
        await rest_client(venue).ohlc("BTC/USD", 120, 0)


async def test_a_refused_gap_fill_is_a_dead_letter_and_the_feed_goes_on():
    venue = Venue([], now_s=NOW.timestamp(), refuse_trades=True)
    client = CoinbaseTradeClient("ws://unused", ["BTC/USD"], rest=rest_client(venue))
    client.last_timestamp["BTC/USD"] = NOW - timedelta(minutes=1)
    batches: list[Any] = [batch async for batch in client._fill_gaps()]
    ((letter,),) = batches
    assert isinstance(letter, Rejected) and letter.reason.startswith("gap fill for BTC/USD refused: ")
    assert client.counts["gap_fills_refused"] == 1


async def test_a_pair_without_a_trade_yet_is_filled_from_the_first_subscription():
    first = NOW - timedelta(minutes=5)
    trades = [trade(i, "ETH/USD", ts=first + timedelta(seconds=10 * i)) for i in range(1, 10)]
    venue = Venue(trades, now_s=first.timestamp())
    client = CoinbaseTradeClient("ws://unused", PAIRS, rest=rest_client(venue))
    await client._mark_quiet_pairs()  # before the first subscription, at the venue's time `first`
    assert client.quiet_since == dict.fromkeys(PAIRS, first)
    assert [b async for b in client._fill_gaps()] == []  # a fresh feed's first connection missed nothing
    # BTC traded and ETH did not before the connection was lost; ETH's trades since `first` are filled.
    client._accept([trade(1, ts=first)])
    client.counts["reconnects"] += 1
    venue.now_s = (first + timedelta(minutes=3)).timestamp()
    filled = [t for batch in [b async for b in client._fill_gaps()] for t in batch]
    assert [(t.pair, t.trade_id) for t in filled] == [("ETH/USD", i) for i in range(1, 10)]
    assert client.last_trade_id == {"BTC/USD": 1, "ETH/USD": 9}
