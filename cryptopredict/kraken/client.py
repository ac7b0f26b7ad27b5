"""Kraken WebSocket v2 trade client: connects, subscribes, and yields trades or rejected messages.

The same code talks to wss://ws.kraken.com/v2 and to the local replay exchange. Reconnects with
capped exponential backoff and jitter; the market-data issue adds the REST gap fill.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import websockets
from websockets.asyncio.client import connect

from cryptopredict.kraken.protocol import MalformedMessage, decode, parse_trades, subscribe_request
from cryptopredict.models import Trade

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A message that could not be used, kept with its reason for the dead-letter topic."""

    raw: str
    reason: str


class KrakenTradeClient:
    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        heartbeat_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.url = url
        self.pairs = list(pairs)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_backoff_s = max_backoff_s
        self.status = "connecting"
        self.reconnects = 0
        self._seen: dict[str, int] = {}

    async def events(self) -> AsyncIterator[Trade | Rejected]:
        attempt = 0
        while True:
            try:
                async with connect(self.url, max_size=2**22) as ws:
                    await ws.send(subscribe_request(self.pairs))
                    attempt = 0
                    while True:
                        # No message at all (heartbeats included) for this long means a dead link.
                        raw = await asyncio.wait_for(ws.recv(), self.heartbeat_timeout_s)
                        for event in self._handle(raw):
                            yield event
            except (OSError, TimeoutError, websockets.ConnectionClosed, websockets.InvalidHandshake) as exc:
                attempt += 1
                self.reconnects += 1
                delay = min(self.max_backoff_s, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                logger.warning("feed connection lost (%s); reconnecting in %.1fs", exc, delay)
                self.status = "reconnecting"
                await asyncio.sleep(delay)

    def _handle(self, raw: str | bytes) -> list[Trade | Rejected]:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        try:
            message = decode(raw)
            channel = message.get("channel")
            if channel == "trade":
                batch = parse_trades(message, ingested_at=datetime.now(UTC))
                return list(self._new_trades(batch.trades))
            if channel == "status":
                self.status = str((message.get("data") or [{}])[0].get("system", "unknown"))
                logger.info("exchange status: %s", self.status)
            elif message.get("method") == "subscribe" and not message.get("success", False):
                logger.error("subscription failed: %s", message.get("error"))
                return [Rejected(text, f"subscription failed: {message.get('error')}")]
            return []
        except MalformedMessage as exc:
            return [Rejected(text, str(exc))]

    def _new_trades(self, trades: list[Trade]) -> list[Trade]:
        """Drops trades already seen (a snapshot repeats recent trades after a reconnect)."""
        fresh = []
        for trade in trades:
            if trade.trade_id > self._seen.get(trade.pair, -1):
                self._seen[trade.pair] = trade.trade_id
                fresh.append(trade)
        return fresh
