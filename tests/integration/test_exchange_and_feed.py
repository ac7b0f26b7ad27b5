"""The replay exchange speaks Kraken's WebSocket v2 protocol, and the feed client handles what a real
exchange sends, bad messages included, over real loopback connections."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from cryptopredict.feed_client import Rejected
from cryptopredict.kraken.client import KrakenTradeClient
from cryptopredict.kraken.protocol import subscribe_request
from cryptopredict.kraken.sources import synthetic_trades
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import ReplayExchange

pytestmark = pytest.mark.integration

ANCHOR = datetime(2026, 3, 1, tzinfo=UTC)


async def test_replay_exchange_protocol():
    trades = list(synthetic_trades("BTC/USD", ANCHOR, minutes=3, trades_per_minute=60, seed=1))
    exchange = ReplayExchange(trades, speed=60)
    await exchange.start()
    try:
        async with connect(exchange.url) as ws:
            status = json.loads(await ws.recv())
            assert status["channel"] == "status" and status["data"][0]["system"] == "online"
            await ws.send(subscribe_request(["BTC/USD", "DOGE/EUR"], req_id=42))
            replies = [json.loads(await ws.recv()) for _ in range(3)]
            acks = [r for r in replies if r.get("method") == "subscribe"]
            ok = next(a for a in acks if a["success"])
            failed = next(a for a in acks if not a["success"])
            assert ok["req_id"] == 42 and ok["result"]["symbol"] == "BTC/USD"
            assert "DOGE/EUR" in failed["error"]
            assert [r["type"] for r in replies if r.get("channel") == "trade"] == ["snapshot"]
            await ws.send(json.dumps({"method": "ping", "req_id": 7}))
            seen = {"update": 0, "heartbeat": 0, "pong": 0}
            async with asyncio.timeout(10):
                while not all(seen.values()):
                    message = json.loads(await ws.recv())
                    if message.get("method") == "pong":
                        assert message["req_id"] == 7
                        seen["pong"] += 1
                    elif message.get("channel") == "heartbeat":
                        seen["heartbeat"] += 1
                    elif message.get("type") == "update":
                        assert all(row["symbol"] == "BTC/USD" for row in message["data"])
                        seen["update"] += 1
    finally:
        await exchange.stop()


async def test_feed_client_rejects_bad_messages_and_reconnects_without_duplicates():
    good = {
        "symbol": "BTC/USD",
        "side": "buy",
        "price": 100.5,
        "qty": 0.1,
        "ord_type": "limit",
        "trade_id": 1,
        "timestamp": "2026-03-01T00:00:00.000001Z",
    }
    connections = 0

    async def handler(ws):
        nonlocal connections
        connections += 1
        await ws.recv()  # the subscribe request
        await ws.send(json.dumps({"channel": "trade", "type": "snapshot", "data": [good]}))
        if connections == 1:
            await ws.send("{broken")
            await ws.send(
                json.dumps({"channel": "trade", "type": "update", "data": [good | {"price": "abc"}]})
            )
            await ws.close()  # the exchange drops us; the client must come back
            return
        await ws.send(json.dumps({"channel": "trade", "type": "update", "data": [good | {"trade_id": 2}]}))
        await asyncio.sleep(5)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = KrakenTradeClient(f"ws://127.0.0.1:{port}", ["BTC/USD"], max_backoff_s=1)
        events = []
        async with asyncio.timeout(20):
            async for event in client.events():
                events.append(event)
                if isinstance(event, Trade) and event.trade_id == 2:
                    break
    trades = [e.trade_id for e in events if isinstance(e, Trade)]
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert trades == [1, 2]  # the repeated snapshot after the reconnect is not published twice
    assert rejected[0].raw == "{broken"
    assert "invalid JSON" in rejected[0].reason and "invalid trade" in rejected[1].reason
    assert client.reconnects == 1
