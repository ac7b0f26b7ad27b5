"""Kraken WebSocket v2 trade client: many pairs on one connection, trades out, nothing lost or doubled.

The same code talks to wss://ws.kraken.com/v2 and to the local replay exchange.
- A watchdog treats a connection with no message at all (heartbeats included) for
  `heartbeat_timeout_s` as dead; reconnects back off exponentially with jitter, capped.
- The last trade_id and timestamp per pair are kept. After a reconnect, the gap is filled from the
  REST `Trades` endpoint before the stream is read again; everything is de-duplicated by trade_id,
  the snapshot's last 50 trades included.
- Malformed messages and rows, unknown symbols, timestamps far in the future and failed
  subscriptions come out as `Rejected` with the raw payload and a reason; the feed goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from websockets.asyncio.client import connect

from cryptopredict.kraken.protocol import MalformedMessage, decode, parse_trades, subscribe_request
from cryptopredict.kraken.rest import KrakenRestClient, KrakenRestError, to_ns
from cryptopredict.models import Trade
from cryptopredict.topics import KRAKEN

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A message (or one row of it) that could not be used, kept with its reason for the dead letters."""

    raw: str
    reason: str


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': between half and all of min(cap, base * 2**attempt)."""
    ceiling = min(cap_s, base_s * 2**attempt)
    return float(ceiling * rng.uniform(0.5, 1.0))


class ConnectionDead(Exception):
    """The watchdog fired: no message within the heartbeat timeout."""


class KrakenTradeClient:
    exchange = KRAKEN

    @staticmethod
    def rest_client(url: str, min_interval_s: float) -> KrakenRestClient:
        """The REST client that fills this venue's gaps (the feed builds it from the venue's settings)."""
        return KrakenRestClient(url, min_interval_s=min_interval_s)

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        rest: KrakenRestClient | None = None,
        heartbeat_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_future_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.pairs = list(pairs)
        self.rest = rest
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.max_future = timedelta(seconds=max_future_s)
        self.rng = rng or random.Random()
        self.status = "connecting"
        self.subscribed: set[str] = set()
        self.failed_pairs: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.last_trade_id: dict[str, int] = {}
        self.last_timestamp: dict[str, datetime] = {}

    @property
    def reconnects(self) -> int:
        return self.counts["reconnects"]

    async def events(self) -> AsyncIterator[Trade | Rejected]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Trade | Rejected]]:
        """What each exchange message (or REST page) yields, in order: its accepted trades and rejects."""
        attempt = 0
        while True:
            try:
                async with connect(self.url, max_size=2**22, max_queue=4096, open_timeout=10) as ws:
                    await ws.send(subscribe_request(self.pairs))
                    # Fill before reading the stream, so no streamed trade moves last_trade_id past the gap.
                    async for batch in self._fill_gaps():
                        yield batch
                    while True:
                        try:
                            raw = await asyncio.wait_for(ws.recv(), self.heartbeat_timeout_s)
                        except TimeoutError as exc:
                            self.counts["watchdog_timeouts"] += 1
                            raise ConnectionDead(f"no message for {self.heartbeat_timeout_s:.0f}s") from exc
                        attempt = 0  # the link delivers again: the next failure starts a fresh backoff
                        if batch := self._handle(raw):
                            yield batch
            except (OSError, ConnectionDead, KrakenRestError, websockets.WebSocketException) as exc:
                self.counts["reconnects"] += 1
                delay = backoff_delay(attempt, self.backoff_base_s, self.max_backoff_s, self.rng)
                attempt += 1
                self.status = "reconnecting"
                logger.warning("feed connection lost (%s); reconnect %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)

    async def _fill_gaps(self) -> AsyncIterator[list[Trade | Rejected]]:
        if not self.last_timestamp:
            return
        if self.rest is None:
            logger.warning("no REST endpoint configured: trades missed while disconnected are not filled")
            return
        for pair, last_ts in list(self.last_timestamp.items()):
            # One nanosecond early: trades sharing the last timestamp come back and are de-duplicated.
            async for trades, _ in self.rest.trades_since(pair, to_ns(last_ts) - 1):
                batch = self._accept(trades)
                self.counts["gap_filled"] += sum(isinstance(event, Trade) for event in batch)
                if batch:
                    yield batch

    def _handle(self, raw: str | bytes) -> list[Trade | Rejected]:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        try:
            message = decode(raw)
        except MalformedMessage as exc:
            return [self._reject(text, str(exc))]
        channel, method = message.get("channel"), message.get("method")
        if channel == "trade":
            try:
                batch = parse_trades(message, ingested_at=datetime.now(UTC))
            except MalformedMessage as exc:
                return [self._reject(text, str(exc))]
            rejected: list[Trade | Rejected] = [self._reject(r.raw, r.reason) for r in batch.rejected]
            return rejected + self._accept(batch.trades)
        if channel == "heartbeat":
            self.counts["heartbeats"] += 1
        elif channel == "status":
            self._on_status(message)
        elif method == "subscribe":
            return self._on_ack(message, text)
        return []

    def _on_status(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        first = data[0] if isinstance(data, list) and data else {}
        status = str(first.get("system", "unknown")) if isinstance(first, dict) else "unknown"
        if status != self.status:
            log = logger.info if status == "online" else logger.warning
            log("exchange status: %s", status)
            self.counts[f"status_{status}"] += 1
        self.status = status

    def _on_ack(self, message: dict[str, Any], text: str) -> list[Trade | Rejected]:
        result = message.get("result")
        symbol = message.get("symbol") or (result.get("symbol") if isinstance(result, dict) else None)
        # A symbol that is not a string (a broken ack) is kept by its text, as the dead letter shows it.
        symbol = symbol if isinstance(symbol, str) else json.dumps(symbol) if symbol else "?"
        if message.get("success"):
            self.subscribed.add(symbol)
            self.failed_pairs.pop(symbol, None)
            return []
        error = str(message.get("error", "no reason given"))
        self.failed_pairs[symbol] = error
        logger.error("subscription for %s failed: %s", symbol, error)
        return [self._reject(text, f"subscription failed for {symbol}: {error}")]

    def _accept(self, trades: list[Trade]) -> list[Trade | Rejected]:
        """New trades in order; repeats (snapshot, gap fill overlap) are dropped by trade_id."""
        accepted: list[Trade | Rejected] = []
        latest_allowed = datetime.now(UTC) + self.max_future
        for trade in trades:
            if trade.pair not in self.pairs:
                accepted.append(self._reject(_trade_json(trade), f"unknown symbol {trade.pair}"))
            elif trade.timestamp > latest_allowed:
                accepted.append(
                    self._reject(_trade_json(trade), f"timestamp {trade.timestamp} is in the future")
                )
            elif trade.trade_id <= self.last_trade_id.get(trade.pair, -1):
                self.counts["duplicates_dropped"] += 1
            else:
                self.last_trade_id[trade.pair] = trade.trade_id
                self.last_timestamp[trade.pair] = trade.timestamp
                self.counts["trades"] += 1
                accepted.append(trade)
        return accepted

    def _reject(self, raw: str, reason: str) -> Rejected:
        self.counts["rejected"] += 1
        return Rejected(raw, reason)


def _trade_json(trade: Trade) -> str:
    return json.dumps(trade.model_dump(mode="json"))
