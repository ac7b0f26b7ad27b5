"""Binance spot: stream and REST parsing, the client's rules (subscriptions, de-duplication, id gaps) and
the REST client's rate-limit handling, against a stand-in server (httpx.MockTransport)."""

import json
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cryptopredict.binance.client import BinanceTradeClient
from cryptopredict.binance.protocol import (
    EPOCH,
    SubscribeReply,
    from_ms,
    parse_message,
    stream_name,
    subscribe_request,
    trade_event,
    trade_message,
)
from cryptopredict.binance.rest import (
    BinanceRestClient,
    BinanceRestError,
    historical_trade,
    klines_response,
    parse_klines_response,
    parse_trades_response,
)
from cryptopredict.feed_client import Rejected
from cryptopredict.kraken.protocol import MalformedMessage
from cryptopredict.models import Trade
from cryptopredict.simulators.binance import kline_rows
from cryptopredict.venue_rest import OhlcRow

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
PAIRS = ["BTC/USDT", "ETH/USDT"]
SAMPLE = {
    "e": "trade",
    "E": 1767268800124,
    "s": "BTCUSDT",
    "t": 12345,
    "p": "0.001",
    "q": "100",
    "T": 1767268800123,
    "m": True,
    "M": True,
}


def trade(trade_id: int, pair: str = "BTC/USDT", ts: datetime | None = None) -> Trade:
    ts = ts or datetime.now(UTC).replace(microsecond=0)
    return Trade(
        exchange="binance",
        pair=pair,
        trade_id=trade_id,
        price=100.5,
        qty=0.25,
        side="buy",
        ord_type="market",
        timestamp=ts,
        ingested_at=ts,
    )


def raw(trade_id: int, symbol: str = "BTCUSDT", **changes) -> str:
    ms = int(datetime.now(UTC).timestamp() * 1000)
    return json.dumps(SAMPLE | {"s": symbol, "t": trade_id, "T": ms, "E": ms} | changes)


def subscribed_client(rest: BinanceRestClient | None = None) -> BinanceTradeClient:
    client = BinanceTradeClient("ws://unused", PAIRS, rest=rest)
    client._requests = {1: "BTC/USDT", 2: "ETH/USDT"}
    return client


async def handled(client: BinanceTradeClient, raws: list[str]) -> list[list[Trade | Rejected]]:
    return [batch async for batch in client._handle_messages(raws)]


# --- the stream protocol ---------------------------------------------------------------------------


def test_a_raw_trade_event_parses_with_the_taker_side():
    t = parse_message(json.dumps(SAMPLE), ingested_at=NOW)
    assert isinstance(t, Trade)
    assert (t.exchange, t.pair, t.market, t.trade_id) == ("binance", "BTC/USDT", "binance:BTC/USDT", 12345)
    assert (t.price, t.qty, t.timestamp) == (0.001, 100.0, NOW)
    assert t.side == "sell"  # m: the buyer was the maker, so the taker sold
    assert parse_message(json.dumps(SAMPLE | {"m": False}), NOW).side == "buy"


def test_a_combined_stream_message_is_unwrapped_and_checked_against_its_stream():
    wrapped = json.dumps({"stream": "btcusdt@trade", "data": SAMPLE})
    assert parse_message(wrapped, NOW) == parse_message(json.dumps(SAMPLE), NOW)
    with pytest.raises(MalformedMessage, match="carries a trade of 'BTCUSDT'"):
        parse_message(json.dumps({"stream": "ethusdt@trade", "data": SAMPLE}), NOW)


@pytest.mark.parametrize("combined", [False, True])
def test_trade_messages_round_trip(combined):
    t = trade(7, "ETH/USDT", NOW).model_copy(update={"side": "sell", "price": 0.00001, "qty": 1e-08})
    assert parse_message(trade_message(t, combined), NOW) == t
    assert trade_event(t)["p"] == "0.00001"  # decimal text, never an exponent


def test_milliseconds_convert_exactly():
    rng = random.Random(3)
    for ms in [0, 1, 999, 1767268800123, *(rng.randrange(0, 4_102_444_800_000) for _ in range(2000))]:
        assert from_ms(ms) == EPOCH + timedelta(milliseconds=ms)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        (SAMPLE | {"e": "aggTrade"}, "not a trade event: e='aggTrade'"),
        ({k: v for k, v in SAMPLE.items() if k != "p"}, "misses field 'p'"),
        (SAMPLE | {"p": "abc"}, "p is not a number"),
        (SAMPLE | {"p": 0.001}, "p is not a decimal string"),
        (SAMPLE | {"t": "12345"}, "t is not an integer"),
        (SAMPLE | {"t": True}, "t is not an integer"),
        (SAMPLE | {"m": "true"}, "m is not a boolean"),
        (SAMPLE | {"q": "-1"}, "qty"),
        (SAMPLE | {"p": "NaN"}, "price"),
        (SAMPLE | {"T": 10**20}, "T is out of range"),
        (SAMPLE | {"s": "NOPE"}, "unknown symbol"),
        (SAMPLE | {"s": ["BTCUSDT"]}, "s is not a symbol"),
        ({"stream": "btcusdt@trade", "data": "x"}, "needs a stream name and a data object"),
        ({"channel": "trade", "type": "update", "data": []}, "not a trade event"),  # Kraken's, not ours
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(message, reason):
    text = message if isinstance(message, str) else json.dumps(message)
    with pytest.raises(MalformedMessage, match=reason.replace("(", r"\(").replace("[", r"\[")):
        parse_message(text, NOW)


def test_replies_to_requests_parse():
    assert parse_message('{"result": null, "id": 1}', NOW) == SubscribeReply(1, None)
    error = '{"error": {"code": 2, "msg": "Invalid request"}, "id": 3}'
    assert parse_message(error, NOW) == SubscribeReply(3, "2 Invalid request")
    assert json.loads(subscribe_request(["BTC/USDT"], 4)) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@trade"],
        "id": 4,
    }
    assert stream_name("ETH/USDT") == "ethusdt@trade"


# --- the client's rules ----------------------------------------------------------------------------


async def test_trades_are_batched_in_order_and_repeats_dropped():
    client = subscribed_client()
    (batch,) = await handled(client, [raw(1), raw(2), raw(1, "ETHUSDT"), raw(2), raw(3)])
    assert [(t.pair, t.trade_id) for t in batch] == [
        ("BTC/USDT", 1),
        ("BTC/USDT", 2),
        ("ETH/USDT", 1),
        ("BTC/USDT", 3),
    ]
    assert client.counts["duplicates_dropped"] == 1 and client.last_trade_id == {"BTC/USDT": 3, "ETH/USDT": 1}


async def test_a_refused_subscription_is_a_dead_letter_and_its_trades_too():
    client = subscribed_client()
    refusal = '{"error": {"code": 2, "msg": "Invalid request"}, "id": 2}'
    (batch,) = await handled(client, ['{"result": null, "id": 1}', refusal, raw(5, "ETHUSDT"), raw(6)])
    assert client.subscribed == {"BTC/USDT"} and client.failed_pairs == {"ETH/USDT": "2 Invalid request"}
    assert [e.reason for e in batch if isinstance(e, Rejected)] == [
        "subscription failed for ETH/USDT: 2 Invalid request",
        "trade of ETH/USDT on a connection not subscribed to it",
    ]
    assert [t.trade_id for t in batch if isinstance(t, Trade)] == [6]


async def test_trades_of_another_symbol_future_times_and_stray_replies_are_rejected():
    client = subscribed_client()
    future = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp() * 1000)
    (batch,) = await handled(client, [raw(1, "XRPUSDT"), raw(2, T=future), '{"result": null, "id": 99}'])
    reasons = [e.reason for e in batch if isinstance(e, Rejected)]
    assert "trade of XRP/USDT on a connection not subscribed to it" in reasons[0]
    assert "in the future" in reasons[1] and "did not send: id 99" in reasons[2]
    assert client.counts["rejected"] == 3 and client.last_trade_id == {}


def test_a_configured_pair_binance_cannot_name_is_reported_not_streamed():
    client = BinanceTradeClient("wss://stream.binance.com:9443", ["BTC/USDT", "BTC/USD"])
    assert client._streamable == ["BTC/USDT"] and "BTC/USD" in client.failed_pairs
    assert "subscription failed for BTC/USD" in client._unreported[0].reason
    assert client.stream_url == "wss://stream.binance.com:9443/ws"
    combined = "ws://h:1/stream?streams=btcusdt@trade"
    assert BinanceTradeClient(combined, PAIRS).stream_url == combined


def historical_server(trades: list[Trade], seen: list[httpx.Request]) -> httpx.MockTransport:
    """historicalTrades of `trades` (one pair), fromId inclusive, as Binance answers."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        from_id, limit = int(request.url.params["fromId"]), int(request.url.params["limit"])
        rows = [historical_trade(t) for t in trades if t.trade_id >= from_id][:limit]
        return httpx.Response(200, json=rows, headers={"X-MBX-USED-WEIGHT-1M": "25"})

    return httpx.MockTransport(answer)


async def test_a_skipped_trade_id_on_the_stream_is_filled_from_rest_before_the_trade():
    seen: list[httpx.Request] = []
    history = [trade(i) for i in range(1, 30)]
    rest = BinanceRestClient("http://x", min_interval_s=0, transport=historical_server(history, seen))
    client = subscribed_client(rest)
    batches = await handled(client, [raw(10), raw(14), raw(15)])
    assert [[t.trade_id for t in b] for b in batches] == [[10], [11, 12, 13], [14, 15]]
    assert seen[0].url.params["fromId"] == "11" and seen[0].url.params["limit"] == "3"
    assert client.counts["stream_gaps"] == 1 and client.counts["gap_filled"] == 3
    assert rest.used_weight == 25
    await rest.aclose()


async def test_a_gap_rest_cannot_fill_is_counted_and_the_stream_goes_on():
    rest = BinanceRestClient("http://x", min_interval_s=0, transport=historical_server([], []))
    client = subscribed_client(rest)
    batches = await handled(client, [raw(10), raw(14)])
    assert [t.trade_id for b in batches for t in b] == [10, 14]
    assert client.counts["gap_unfilled"] == 3
    await rest.aclose()


async def test_reconnect_fill_pages_by_trade_id_until_the_present():
    seen: list[httpx.Request] = []
    history = [trade(i, "ETH/USDT") for i in range(1, 2501)]
    rest = BinanceRestClient("http://x", min_interval_s=0, transport=historical_server(history, seen))
    client = subscribed_client(rest)
    client.last_trade_id["ETH/USDT"] = 100
    filled = [t.trade_id for batch in [b async for b in client._fill_gaps()] for t in batch]
    assert filled == list(range(101, 2501))
    assert [r.url.params["fromId"] for r in seen] == ["101", "1101", "2101"]
    assert client.counts["gap_filled"] == 2400
    await rest.aclose()


# --- REST ------------------------------------------------------------------------------------------


async def test_rest_honours_429_418_5xx_and_the_used_weight():
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(418, headers={"Retry-After": "0"}),
        httpx.Response(503),
        httpx.Response(200, json=[], headers={"X-MBX-USED-WEIGHT-1M": "5900"}),
    ]
    rest = BinanceRestClient(
        "http://x",
        min_interval_s=0,
        ban_backoff_s=0.01,
        max_backoff_s=0.01,
        transport=httpx.MockTransport(lambda _: answers.pop(0)),
    )
    assert await rest.get("/api/v3/historicalTrades", {}) == []
    assert (rest.requests, rest.throttled, rest.banned, rest.used_weight) == (4, 1, 1, 5900)
    assert rest._next_request > time.monotonic()  # past the weight budget: wait for the next minute
    await rest.aclose()


async def test_rest_errors_carry_binance_code_and_message():
    answer = httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
    rest = BinanceRestClient("http://x", min_interval_s=0, transport=httpx.MockTransport(lambda _: answer))
    with pytest.raises(BinanceRestError, match=r"answered 400: -1121 'Invalid symbol.'"):
        await rest.trades_page("BTC/USDT", 1)
    await rest.aclose()


def test_rest_trade_rows_parse_and_malformed_ones_raise():
    t = trade(5, ts=NOW)
    (parsed,) = parse_trades_response([historical_trade(t)], "BTC/USDT", NOW)
    assert parsed == t
    with pytest.raises(BinanceRestError, match="malformed trade row"):
        parse_trades_response([historical_trade(t) | {"id": "5"}], "BTC/USDT", NOW)
    with pytest.raises(BinanceRestError, match="not a list"):
        parse_trades_response({"code": -1}, "BTC/USDT", NOW)


def test_replayed_klines_fill_quiet_minutes_and_page_from_start_time():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    trades = [
        trade(1, ts=base + timedelta(seconds=5)).model_copy(update={"price": 10.0, "qty": 1.0}),
        trade(2, ts=base + timedelta(seconds=50)).model_copy(update={"price": 12.0, "qty": 3.0}),
        trade(3, ts=base + timedelta(minutes=3, seconds=1)).model_copy(update={"price": 11.0}),
    ]
    start_s = int(base.timestamp())
    rows = kline_rows(trades, 60, start_s + 4 * 60 + 10, None, None, 1000)
    assert [r.time - start_s for r in rows] == [0, 60, 120, 180, 240]
    assert rows[0] == OhlcRow(start_s, 10.0, 12.0, 10.0, 12.0, 11.5, 4.0, 2)
    assert rows[1] == OhlcRow(start_s + 60, 12.0, 12.0, 12.0, 12.0, 12.0, 0.0, 0)
    later = kline_rows(trades, 60, start_s + 4 * 60 + 10, (start_s + 61) * 1000, None, 2)
    assert [r.time - start_s for r in later] == [120, 180]  # open time >= startTime, the first `limit`
    assert parse_klines_response(klines_response(rows, 60)) == rows


async def test_ohlc_returns_closed_candles_from_since_like_the_kraken_client():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    start_s = int(base.timestamp())
    trades = [trade(i, ts=base + timedelta(seconds=20 * i)) for i in range(1, 16)]  # up to 5:00
    now_s = start_s + 5 * 60 + 30

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/time":
            return httpx.Response(200, json={"serverTime": now_s * 1000})
        start_ms = int(request.url.params["startTime"])
        rows = kline_rows(trades, 60, now_s, start_ms, None, int(request.url.params["limit"]))
        return httpx.Response(200, json=klines_response(rows, 60))

    rest = BinanceRestClient("http://x", min_interval_s=0, transport=httpx.MockTransport(answer))
    rows = await rest.ohlc("BTC/USDT", 60, start_s + 120)
    assert [r.time - start_s for r in rows] == [120, 180, 240]  # 300 is still forming
    with pytest.raises(ValueError, match="no 7s klines"):
        await rest.ohlc("BTC/USDT", 7, start_s)
    await rest.aclose()
