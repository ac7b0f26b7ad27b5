"""A local exchange that speaks Kraken's WebSocket v2 trade protocol, replaying trades at a chosen speed.

It is the offline twin of wss://ws.kraken.com/v2: `status` on connect, one subscribe ack per symbol,
a snapshot of recent trades, batched `update` messages, heartbeats about once a second and
ping/pong. Trades come from a CSV file of real trades or from a seeded synthetic generator.

The replay clock starts at the first subscription and runs `speed` times faster than the wall clock:
a trade with event time t is sent when (t - first_trade_time) / speed wall seconds have passed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from cryptopredict.kraken.protocol import format_timestamp, trade_message
from cryptopredict.models import Trade

logger = logging.getLogger(__name__)

SNAPSHOT_SIZE = 50
HEARTBEAT_S = 1.0


def synthetic_trades(
    pair: str,
    start: datetime,
    minutes: int,
    trades_per_minute: float = 20.0,
    start_price: float = 30_000.0,
    volatility_per_minute: float = 0.001,
    seed: int = 7,
) -> Iterator[Trade]:
    """Poisson arrivals on a geometric random walk with a little momentum, reproducible by seed."""
    rng = random.Random(seed)
    price, drift = start_price, 0.0
    t = start
    end = start + timedelta(minutes=minutes)
    trade_id = 1
    step_s = 60.0 / trades_per_minute
    while True:
        t += timedelta(seconds=rng.expovariate(1.0 / step_s))
        if t >= end:
            return
        drift = 0.9 * drift + 0.1 * rng.gauss(0, volatility_per_minute)
        price *= math.exp(
            drift * math.sqrt(step_s / 60) + rng.gauss(0, volatility_per_minute) * math.sqrt(step_s / 60)
        )
        yield Trade(
            pair=pair,
            trade_id=trade_id,
            price=round(price, 1),
            qty=round(rng.lognormvariate(-3, 1.2), 8),
            side=rng.choice(("buy", "sell")),
            ord_type=rng.choice(("market", "limit")),
            timestamp=t,
            ingested_at=t,
        )
        trade_id += 1


def csv_trades(path: Path, pair: str) -> Iterator[Trade]:
    """Trades from a `timestamp,time_ms,side,price,qty` file (the format of ../shared/data/kraken)."""
    with path.open() as handle:
        for trade_id, row in enumerate(csv.DictReader(handle), start=1):
            ts = datetime.fromtimestamp(int(row["time_ms"]) / 1000, tz=UTC)
            yield Trade(
                pair=pair,
                trade_id=trade_id,
                price=float(row["price"]),
                qty=float(row["qty"]),
                side="buy" if row["side"] == "buy" else "sell",
                timestamp=ts,
                ingested_at=ts,
            )


@dataclass
class ReplayExchange:
    trades: list[Trade]
    speed: float = 60.0
    host: str = "127.0.0.1"
    port: int = 0
    subscribers: dict[str, set[ServerConnection]] = field(default_factory=dict)
    sent: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _server: Server | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pairs(self) -> set[str]:
        return {t.pair for t in self.trades}

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v2"

    async def start(self) -> None:
        self.trades.sort(key=lambda t: (t.timestamp, t.trade_id))
        self._server = await serve(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._replay()), asyncio.create_task(self._heartbeat())]
        logger.info("replay exchange on %s: %d trades at %.0fx", self.url, len(self.trades), self.speed)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"channel": "status", "type": "update", "data": [{"system": "online"}]}))
        try:
            async for raw in ws:
                await self._on_request(ws, raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            for conns in self.subscribers.values():
                conns.discard(ws)

    async def _on_request(self, ws: ServerConnection, raw: str | bytes) -> None:
        time_in = format_timestamp(datetime.now(UTC))
        try:
            request: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            await ws.send(json.dumps({"error": "Malformed request", "success": False, "time_in": time_in}))
            return
        method, req_id = request.get("method"), request.get("req_id")
        if method == "ping":
            await ws.send(
                json.dumps(
                    {
                        "method": "pong",
                        "req_id": req_id,
                        "time_in": time_in,
                        "time_out": format_timestamp(datetime.now(UTC)),
                    }
                )
            )
            return
        if method != "subscribe" or request.get("params", {}).get("channel") != "trade":
            await ws.send(
                json.dumps(
                    {
                        "method": method,
                        "error": "Unsupported request",
                        "success": False,
                        "req_id": req_id,
                        "time_in": time_in,
                    }
                )
            )
            return
        params = request["params"]
        for symbol in params.get("symbol", []):
            ack: dict[str, Any] = {"method": "subscribe", "req_id": req_id, "time_in": time_in}
            if symbol not in self.pairs:
                ack |= {"success": False, "error": f"Currency pair not supported {symbol}", "symbol": symbol}
            else:
                ack |= {
                    "success": True,
                    "result": {
                        "channel": "trade",
                        "symbol": symbol,
                        "snapshot": params.get("snapshot", True),
                    },
                }
            ack["time_out"] = format_timestamp(datetime.now(UTC))
            await ws.send(json.dumps(ack))
            if not ack["success"]:
                continue
            if params.get("snapshot", True):
                recent = [t for t in self.trades[: self.sent] if t.pair == symbol][-SNAPSHOT_SIZE:]
                await ws.send(trade_message("snapshot", recent))
            self.subscribers.setdefault(symbol, set()).add(ws)
        self._started.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for ws in {ws for conns in self.subscribers.values() for ws in conns}:
                try:
                    await ws.send('{"channel":"heartbeat"}')
                except websockets.ConnectionClosed:
                    pass

    async def _replay(self) -> None:
        await self._started.wait()
        if not self.trades:
            self.finished.set()
            return
        origin_event, origin_wall = self.trades[0].timestamp, time.monotonic()
        while self.sent < len(self.trades):
            due = origin_wall + (self.trades[self.sent].timestamp - origin_event).total_seconds() / self.speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            # Everything due by now goes out together, one message per pair, like Kraken's batches.
            now_event = origin_event + timedelta(seconds=(time.monotonic() - origin_wall) * self.speed)
            batch: dict[str, list[Trade]] = {}
            while self.sent < len(self.trades) and self.trades[self.sent].timestamp <= now_event:
                trade = self.trades[self.sent]
                batch.setdefault(trade.pair, []).append(trade)
                self.sent += 1
            for pair, trades in batch.items():
                message = trade_message("update", trades)
                for ws in list(self.subscribers.get(pair, ())):
                    try:
                        await ws.send(message)
                    except websockets.ConnectionClosed:
                        self.subscribers[pair].discard(ws)
        self.finished.set()
        logger.info("replay finished: %d trades sent", self.sent)
