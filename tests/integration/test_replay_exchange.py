"""The replay exchange as Kraken's offline twin, over real loopback sockets: REST Trades/OHLC on the
WebSocket's port, speed "max", and every fault mode as a raw client sees it. Needs no service."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cryptopredict.kraken.protocol import MalformedMessage, decode, parse_trades, subscribe_request
from cryptopredict.kraken.rest import parse_ohlc_response, parse_trades_response, result_rows
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import MALFORMED_KINDS, Faults, ReplayExchange

pytestmark = pytest.mark.integration

START = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _stack():
    """Overrides the integration conftest's stack start-up: loopback sockets only."""
    return []


def market(minutes: int = 60, pairs: tuple[str, ...] = ("BTC/USD", "ETH/USD"), seed: int = 1) -> list[Trade]:
    return synthetic_market(list(pairs), START, minutes, seed=seed)


async def running(trades: list[Trade], speed: float | str | None = "max", **faults) -> ReplayExchange:
    exchange = ReplayExchange(trades, speed=speed, faults=Faults(**faults))
    await exchange.start()
    return exchange


async def recv_json(ws: ClientConnection, wait_s: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), wait_s))


async def subscribed(exchange: ReplayExchange, pairs: list[str]) -> ClientConnection:
    ws = await connect(exchange.url)
    await ws.send(subscribe_request(pairs))
    return ws


async def drain_until_finished(exchange: ReplayExchange, ws: ClientConnection) -> list[str]:
    """Every message until the replay has finished and the socket is quiet."""
    messages = []
    async with asyncio.timeout(60):
        while True:
            try:
                messages.append(await asyncio.wait_for(ws.recv(), 0.5 if exchange.finished.is_set() else 10))
            except TimeoutError:
                if exchange.finished.is_set():
                    return messages


def trade_ids(messages: list[str], pair: str) -> list[int]:
    ids = []
    for raw in messages:
        message = json.loads(raw)
        if message.get("channel") == "trade":
            ids += [row["trade_id"] for row in message["data"] if row["symbol"] == pair]
    return ids


async def run_to_end(exchange: ReplayExchange, pairs: list[str]) -> list[str]:
    async with await subscribed(exchange, pairs) as ws:
        return await drain_until_finished(exchange, ws)


# --- REST ----------------------------------------------------------------------------------------------


async def page_all(client: httpx.AsyncClient, pair: str, since: str = "0") -> list[list[Trade]]:
    pages = []
    while True:
        response = await client.get("/0/public/Trades", params={"pair": pair, "since": since})
        trades, last = parse_trades_response(response.json(), "BTC/USD", datetime.now(UTC))
        if not trades:
            assert last == int(since)
            return pages
        pages.append(trades)
        since = str(last)


async def test_rest_trades_pages_return_every_served_trade_once():
    exchange = await running(market(minutes=200))
    try:
        messages = await run_to_end(exchange, ["BTC/USD"])
        async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
            pages = await page_all(client, "XBTUSD")
            by_ws_name = await page_all(client, "BTC/USD")
            in_seconds = await page_all(client, "XBTUSD", since=str(START.timestamp() - 1))
    finally:
        await exchange.stop()
    ids = [t.trade_id for page in pages for t in page]
    served = exchange.served_trade_ids["BTC/USD"]
    assert len(served) > 3000 and len(ids) == len(set(ids)) == len(served) and set(ids) == served
    assert max(len(p) for p in pages) == 1000 and all(len(p) <= 1000 for p in pages)
    assert sorted(trade_ids(messages, "BTC/USD")) == sorted(served)  # WS and REST agree
    assert [t.trade_id for p in by_ws_name for t in p] == ids == [t.trade_id for p in in_seconds for t in p]


async def test_rest_trades_never_split_a_timestamp_across_pages():
    # 1500 trades, 20 of which (around the page boundary) share one timestamp.
    stamps = [START + timedelta(seconds=i) for i in range(990)] + [START + timedelta(seconds=990)] * 20
    stamps += [START + timedelta(seconds=1000 + i) for i in range(490)]
    trades = [
        Trade(pair="BTC/USD", trade_id=i + 1, price=100.0, qty=1.0, side="buy", timestamp=ts, ingested_at=ts)
        for i, ts in enumerate(stamps)
    ]
    exchange = await running(trades)
    try:
        await run_to_end(exchange, ["BTC/USD"])
        async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
            pages = await page_all(client, "XBTUSD")
    finally:
        await exchange.stop()
    assert [len(p) for p in pages] == [990, 510]
    assert [t.trade_id for p in pages for t in p] == list(range(1, 1501))


async def test_rest_before_the_clock_starts_serves_nothing_and_unknown_pairs_fail_like_kraken():
    exchange = await running(market(minutes=5))
    try:
        async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
            empty = (await client.get("/0/public/Trades", params={"pair": "XBTUSD", "since": "5"})).json()
            unknown = await client.get("/0/public/Trades", params={"pair": "NOPEUSD"})
            unknown_ohlc = await client.get("/0/public/OHLC", params={"pair": "NOPEUSD"})
            missing = await client.get("/0/public/Nothing")
    finally:
        await exchange.stop()
    assert result_rows(empty) == ([], str(5 * 10**9))
    assert unknown.status_code == 200 and unknown.json() == {"error": ["EQuery:Unknown asset pair"]}
    assert unknown_ohlc.json() == {"error": ["EQuery:Unknown asset pair"]}
    assert missing.status_code == 404


async def test_rest_ohlc_shape_and_last():
    exchange = await running(market(minutes=800, pairs=("BTC/USD",)))
    try:
        await run_to_end(exchange, ["BTC/USD"])
        async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
            full = (await client.get("/0/public/OHLC", params={"pair": "XBTUSD", "interval": "1"})).json()
            since = full["result"]["last"] - 300
            recent = (
                await client.get("/0/public/OHLC", params={"pair": "XBTUSD", "interval": "1", "since": since})
            ).json()
            hourly = (await client.get("/0/public/OHLC", params={"pair": "BTC/USD", "interval": "60"})).json()
            bad = (await client.get("/0/public/OHLC", params={"pair": "XBTUSD", "interval": "7"})).json()
    finally:
        await exchange.stop()
    rows = full["result"]["XXBTZUSD"]
    assert len(rows) == 720  # 800 minutes happened; Kraken returns only the newest 720
    assert all(
        len(r) == 8 and isinstance(r[0], int) and all(isinstance(x, str) for x in r[1:7]) for r in rows
    )
    assert [b[0] - a[0] for a, b in itertools.pairwise(rows)] == [60] * 719
    assert full["result"]["last"] == rows[-2][0]  # the last row is still forming
    last_trade = max(exchange.trades, key=lambda t: t.timestamp)
    assert (
        rows[-1][0] == int(last_trade.timestamp.timestamp()) // 60 * 60
        and rows[-1][4] == f"{last_trade.price}"
    )
    parsed, last = parse_ohlc_response(recent)
    assert [r.time for r in parsed] == [since + 60 * i for i in range(1, 7)] and last == since + 300
    hourly_rows, _ = parse_ohlc_response(hourly)
    assert len(hourly_rows) == 14 and sum(r.count for r in hourly_rows) == len(exchange.trades)
    assert all(r.low <= min(r.open, r.close) <= max(r.open, r.close) <= r.high for r in hourly_rows)
    assert bad["error"] and bad["error"][0].startswith("EGeneral:Invalid arguments")


async def test_rest_429_and_500_fault_modes():
    exchange = await running(market(minutes=5), rest_429_every=2, rest_500_every=3)
    try:
        async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
            answers = [
                await client.get("/0/public/Trades", params={"pair": "XBTUSD", "since": "0"})
                for _ in range(6)
            ]
    finally:
        await exchange.stop()
    assert [r.status_code for r in answers] == [200, 429, 500, 429, 200, 429]  # 6: both; 429 wins
    assert all(r.headers["Retry-After"] == "1" for r in answers if r.status_code == 429)
    assert answers[1].json() == {"error": ["EAPI:Rate limit exceeded"]}


# --- WebSocket faults and speeds -----------------------------------------------------------------------


async def test_speed_max_delivers_everything_as_fast_as_read():
    trades = market(minutes=120)
    exchange = await running(trades, speed="max")
    try:
        started = time.monotonic()
        messages = await run_to_end(exchange, ["BTC/USD", "ETH/USD"])
        elapsed = time.monotonic() - started
    finally:
        await exchange.stop()
    assert elapsed < 30  # two hours of market
    for pair in ("BTC/USD", "ETH/USD"):
        book = [t.trade_id for t in trades if t.pair == pair]
        assert trade_ids(messages, pair) == book
        assert exchange.served_trade_ids[pair] == set(book)


async def test_drop_after_k_messages_on_the_first_connection_only():
    exchange = await running(market(minutes=30), drop_after=5, drop_times=1)
    try:
        first = await subscribed(exchange, ["BTC/USD"])
        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(await recv_json(first))
        assert len(received) == 5  # status, ack, snapshot, then updates (or a heartbeat)
        async with await subscribed(exchange, ["BTC/USD"]) as second:
            assert len([await recv_json(second) for _ in range(20)]) == 20  # no drop the second time
    finally:
        await exchange.stop()
    assert exchange.connections == 2


async def test_silence_keeps_the_socket_open_but_sends_nothing():
    # Real time x60: one BTC trade every few wall seconds, heartbeats would come every second.
    exchange = await running(market(minutes=30), speed=60, stop_heartbeats=True, silence_after=4)
    try:
        async with await subscribed(exchange, ["BTC/USD", "ETH/USD"]) as ws:
            received = [await recv_json(ws) for _ in range(4)]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 2.5)
            await asyncio.wait_for(await ws.ping(), 2)  # the socket is open: protocol pings answer
    finally:
        await exchange.stop()
    assert not any(m.get("channel") == "heartbeat" for m in received)
    assert exchange.sent > 0  # trades went on happening, for REST to serve


async def test_stopped_heartbeats_without_silence_still_send_updates():
    exchange = await running(market(minutes=30), speed=60, stop_heartbeats=True)
    try:
        async with await subscribed(exchange, ["BTC/USD"]) as ws:
            messages = [await recv_json(ws) for _ in range(6)]
    finally:
        await exchange.stop()
    assert not any(m.get("channel") == "heartbeat" for m in messages)
    assert any(m.get("type") == "update" for m in messages)


async def test_malformed_messages_are_injected_in_addition_to_real_trades():
    # At max speed a message carries up to 100 trades, so a 40-minute market is a dozen updates.
    trades = market(minutes=40, pairs=("BTC/USD",))
    exchange = await running(trades, malformed_every=1)
    try:
        messages = await run_to_end(exchange, ["BTC/USD"])
    finally:
        await exchange.stop()
    good_ids, bad = [], []
    for raw in messages:
        try:
            message = decode(raw)
        except MalformedMessage:
            bad.append("bad_json")
            continue
        if message.get("channel") != "trade":
            continue
        batch = parse_trades(message, datetime.now(UTC))
        for row in batch.rejected:
            bad.append(row.reason)
        for trade in batch.trades:
            if trade.pair != "BTC/USD":
                bad.append("unknown_symbol")
            elif trade.timestamp > START + timedelta(days=30):
                bad.append("future_timestamp")
            else:
                good_ids.append(trade.trade_id)
    assert len(bad) == len(exchange.malformed_sent) == exchange.updates_sent >= 6
    assert exchange.malformed_sent[:6] == list(MALFORMED_KINDS)
    # Nothing is lost: every real trade arrives intact, once each (the bad copies are extra).
    assert (
        sorted(set(good_ids)) == [t.trade_id for t in trades] == sorted(exchange.served_trade_ids["BTC/USD"])
    )


async def test_subscribe_error_for_one_pair_while_the_other_flows():
    exchange = await running(market(minutes=10), subscribe_error_pairs=frozenset({"ETH/USD"}))
    try:
        messages = await run_to_end(exchange, ["BTC/USD", "ETH/USD"])
    finally:
        await exchange.stop()
    replies = [m for m in map(json.loads, messages) if m.get("method") == "subscribe"]
    acks = {m["result"]["symbol"] if m["success"] else m["symbol"]: m for m in replies}
    assert acks["BTC/USD"]["success"] and not acks["ETH/USD"]["success"] and acks["ETH/USD"]["error"]
    assert len(trade_ids(messages, "BTC/USD")) == len(exchange.served_trade_ids["BTC/USD"]) > 0
    assert trade_ids(messages, "ETH/USD") == []
    assert exchange.served_trade_ids["ETH/USD"]  # ETH trades still happened, for REST


async def test_maintenance_status_pause_then_online():
    exchange = await running(market(minutes=10), maintenance_after=3, maintenance_s=1.5)
    try:
        async with await subscribed(exchange, ["BTC/USD"]) as ws:
            timeline = []
            async with asyncio.timeout(20):
                while len([s for _, s in timeline if s == "online"]) < 2 or timeline[-1][1] != "update":
                    message = await recv_json(ws)
                    kind = (message.get("data") or [{}])[0].get("system") or message.get("type")
                    timeline.append((time.monotonic(), kind))
    finally:
        await exchange.stop()
    kinds = [k for _, k in timeline if k in ("online", "maintenance", "update")]
    assert kinds[:5] == ["online", "update", "update", "update", "maintenance"]
    assert kinds[5] == "online" and kinds[6] == "update"
    down = next(t for t, k in timeline if k == "maintenance")
    up = [t for t, k in timeline if k == "online"][1]
    assert up - down >= 1.4
