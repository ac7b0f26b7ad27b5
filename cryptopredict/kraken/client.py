"""Kraken WebSocket v2 trade client: many pairs on one connection, trades out, nothing lost or doubled.

The same code talks to wss://ws.kraken.com/v2 and to the local replay exchange.
- A watchdog treats a connection with no message at all (heartbeats included) for
  `heartbeat_timeout_s` as dead; reconnects back off exponentially with jitter, capped.
- The last trade_id and timestamp per pair are kept. After a reconnect, the gap is filled from the
  REST `Trades` endpoint before the stream is read again; everything is de-duplicated by trade_id,
  the snapshot's last 50 trades included.
- Malformed messages and rows, unknown symbols, timestamps far in the future and failed
  subscriptions come out as `Rejected` with the raw payload and a reason; the feed goes on.
The reconnect loop, the watchdog and the de-duplication are VenueTradeClient's (cryptopredict/feed_client.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection

from cryptopredict.feed_client import Rejected, VenueTradeClient
from cryptopredict.kraken.protocol import MalformedMessage, decode, parse_trades, subscribe_request
from cryptopredict.kraken.rest import KrakenRestClient, to_ns
from cryptopredict.models import Trade
from cryptopredict.topics import KRAKEN

logger = logging.getLogger(__name__)


class KrakenTradeClient(VenueTradeClient[KrakenRestClient]):
    exchange = KRAKEN
    rest_class = KrakenRestClient
    connection_name = "feed"

    async def _subscribe(self, ws: ClientConnection) -> None:
        await ws.send(subscribe_request(self.pairs))

    async def _fill_gaps(self) -> AsyncIterator[list[Trade | Rejected]]:
        if not self.last_timestamp or (rest := self._gap_rest()) is None:
            return
        for pair, last_ts in list(self.last_timestamp.items()):
            # One nanosecond early: trades sharing the last timestamp come back and are de-duplicated.
            async for trades, _ in rest.trades_since(pair, to_ns(last_ts) - 1):
                if batch := self._gap_filled(self._accept(trades)):
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
        self._set_status(status, "exchange status: %s", status)

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

    def _foreign(self, trade: Trade) -> str | None:
        return None if trade.pair in self.pairs else f"unknown symbol {trade.pair}"
