"""Coinbase Advanced Trade trade client: the `market_trades` channel of many products on one connection,
trades out, nothing lost or doubled. Like the Kraken client it is a VenueTradeClient
(cryptopredict/feed_client.py), so the feed runs either.

The same code talks to wss://advanced-trade-ws.coinbase.com and to the replay exchange speaking Coinbase.
- `sequence_num` counts the messages of one connection. A skipped number means messages were lost:
  counted, and handled as a dropped connection (reconnect, then fill from REST), the message that showed
  the gap included. A number already seen on the connection (repeated or out of order) is a dead letter.
- The `heartbeats` channel keeps a quiet connection talking: no message at all for `heartbeat_timeout_s`
  and the connection is dead; reconnects back off exponentially with jitter, capped.
- The last trade id and timestamp per pair are kept; after a reconnect the gap is filled from the REST
  market trades (paged by time) before the stream is read again; everything is de-duplicated by trade id
  (per product increasing integers), the subscription's snapshot included. A pair with no trade seen yet
  is filled from the venue's time of the first subscription (or of its last fill), so a connection lost
  before a quiet pair's first trade loses nothing either.
- `market_trades` is subscribed one product per request, so a product the venue refuses (an `error`
  message) is a dead letter and the others flow. Malformed messages and rows, unknown product ids,
  trades of a product this connection did not subscribe and timestamps far in the future come out as
  `Rejected` with the raw payload and a reason; the feed goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection

from cryptopredict.coinbase.protocol import (
    COINBASE,
    parse_market_trades,
    parse_status,
    parse_subscriptions,
    sequence_num,
    subscribe_requests,
)
from cryptopredict.coinbase.rest import CoinbaseRestClient, CoinbaseRestRefused
from cryptopredict.feed_client import Rejected, VenueTradeClient, send_paced
from cryptopredict.kraken.protocol import MalformedMessage, decode
from cryptopredict.models import Trade
from cryptopredict.venues import venue_symbol

logger = logging.getLogger(__name__)

# Coinbase takes at most 8 unauthenticated messages a second from one address.
SUBSCRIBES_PER_SECOND = 8


class SequenceGap(Exception):
    """A skipped sequence_num: messages of this connection are lost; reconnect and fill from REST."""


class CoinbaseTradeClient(VenueTradeClient[CoinbaseRestClient]):
    exchange = COINBASE
    rest_class = CoinbaseRestClient
    reconnect_errors = (*VenueTradeClient.reconnect_errors, SequenceGap)
    connection_name = COINBASE

    def __init__(self, url: str, pairs: Sequence[str], **options: Any) -> None:
        super().__init__(url, pairs, **options)
        # Product id -> project pair; a pair Coinbase cannot name is a configuration error, raised here.
        self.products = {venue_symbol(COINBASE, pair): pair for pair in self.pairs}
        self.product_status: dict[str, str] = {}
        # Pairs without a trade yet: the venue's time up to which REST or the stream has them all.
        self.quiet_since: dict[str, datetime] = {}
        self._next_sequence = 0

    async def _connection(self) -> AsyncGenerator[list[Trade | Rejected], None]:
        await self._mark_quiet_pairs()  # before connecting: Coinbase wants a subscribe within 5 s
        async with contextlib.aclosing(super()._connection()) as batches:
            async for batch in batches:
                yield batch

    async def _subscribe(self, ws: ClientConnection) -> None:
        self._next_sequence = 0  # numbers start again with every connection
        await send_paced(ws, subscribe_requests(self.products), SUBSCRIBES_PER_SECOND)

    async def _mark_quiet_pairs(self) -> None:
        """Before a pair's first subscription: the venue's time from which its trades are the feed's to
        deliver, should the connection be lost before its first trade arrives."""
        quiet = [p for p in self.pairs if p not in self.last_timestamp and p not in self.quiet_since]
        if self.rest is None or not quiet:
            return
        try:
            now = datetime.fromtimestamp(await self.rest.server_time(), UTC)
        except CoinbaseRestRefused as exc:
            logger.error("coinbase server time refused (%s): quiet pairs are not filled after a drop", exc)
            return
        self.quiet_since.update(dict.fromkeys(quiet, now))

    async def _fill_gaps(self) -> AsyncIterator[list[Trade | Rejected]]:
        """Trades from each pair's last one (or quiet time) up to the venue's now, which is after this
        connection subscribed: the stream has every trade from then on."""
        since = {pair: self.last_timestamp.get(pair) or self.quiet_since.get(pair) for pair in self.pairs}
        if not any(since.values()) or (self.counts["reconnects"] == 0 and not self.last_timestamp):
            return  # the first connection of a fresh feed: nothing was missed
        if (rest := self._gap_rest()) is None:
            return
        until_s: float | None
        try:
            until_s = await rest.server_time()
        except CoinbaseRestRefused:
            until_s = None  # each pair asks again below, and a refusal there is its dead letter
        for pair, start in since.items():
            if start is None or (pair in self.failed_pairs and pair not in self.last_timestamp):
                continue
            try:
                async for trades, bad in rest.trades_since(pair, start, until_s):
                    rejected: list[Trade | Rejected] = [self._reject(r.raw, r.reason) for r in bad]
                    if batch := self._gap_filled(rejected + self._accept(trades)):
                        yield batch
            except CoinbaseRestRefused as exc:
                # Asking again would be refused again: the gap stays, visible as a dead letter.
                self.counts["gap_fills_refused"] += 1
                raw = json.dumps({"pair": pair, "since": start.isoformat()})
                yield [self._reject(raw, f"gap fill for {pair} refused: {exc}")]
                continue
            if pair not in self.last_timestamp and until_s is not None:
                self.quiet_since[pair] = datetime.fromtimestamp(until_s, UTC)

    def _handle(self, raw: str | bytes) -> list[Trade | Rejected]:
        """One message's trades and dead letters; raises SequenceGap when messages were lost before it."""
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        try:
            message = decode(raw)
            number = sequence_num(message)
        except MalformedMessage as exc:
            return [self._reject(text, str(exc))]
        if number is not None:
            if number > self._next_sequence:
                lost = number - self._next_sequence
                self.counts["sequence_gaps"] += 1
                self.counts["messages_lost"] += lost
                raise SequenceGap(f"sequence_num {number} where {self._next_sequence} was due: {lost} lost")
            if number < self._next_sequence:
                self.counts["sequence_out_of_order"] += 1
                reason = (
                    f"sequence_num {number} out of order: {self._next_sequence} was due on this connection"
                )
                return [self._reject(text, reason)]
            self._next_sequence = number + 1
        channel = message.get("channel")
        try:
            if message.get("type") == "error":
                return self._on_error(message, text)
            if channel == "market_trades":
                batch = parse_market_trades(message, ingested_at=datetime.now(UTC))
                rejected: list[Trade | Rejected] = [self._reject(r.raw, r.reason) for r in batch.rejected]
                return rejected + self._accept(batch.trades)
            if channel == "heartbeats":
                self.counts["heartbeats"] += 1
            elif channel == "subscriptions":
                self._on_subscriptions(message)
            elif channel == "status":
                self._on_status(message)
        except MalformedMessage as exc:
            return [self._reject(text, str(exc))]
        return []  # other channels: Coinbase may add messages; clients are to ignore them

    def _on_error(self, message: dict[str, Any], text: str) -> list[Trade | Rejected]:
        error = str(message.get("message") or message.get("reason") or "no reason given")
        # Coinbase's errors name no field for the product; the text does when a product was refused.
        refused = [
            pair
            for product, pair in self.products.items()
            if re.search(rf"(?<![A-Za-z0-9-]){re.escape(product)}(?![A-Za-z0-9-])", text)
        ]
        self.counts["venue_errors"] += 1
        if not refused:
            logger.error("coinbase error: %s", error)
            return [self._reject(text, f"venue error: {error}")]
        for pair in refused:
            self.failed_pairs[pair] = error
            self.subscribed.discard(pair)
        logger.error("subscription for %s failed: %s", ", ".join(refused), error)
        return [self._reject(text, f"subscription failed for {', '.join(refused)}: {error}")]

    def _on_subscriptions(self, message: dict[str, Any]) -> None:
        products = parse_subscriptions(message).get("market_trades", [])
        self.subscribed = {self.products[p] for p in products if p in self.products}
        for pair in self.subscribed:
            self.failed_pairs.pop(pair, None)

    def _on_status(self, message: dict[str, Any]) -> None:
        for product, status in parse_status(message).items():
            if product in self.products:
                self.product_status[self.products[product]] = status
        status = next((s for s in self.product_status.values() if s != "online"), "online")
        self._set_status(status, "coinbase status: %s (%s)", status, self.product_status)

    def _accept(self, trades: Iterable[Trade]) -> list[Trade | Rejected]:
        """As VenueTradeClient._accept, in trade-id order (Coinbase sends newest first)."""
        return super()._accept(sorted(trades, key=lambda t: t.trade_id))

    def _foreign(self, trade: Trade) -> str | None:
        if trade.pair in self.pairs:
            return None
        return (
            f"trade of product {venue_symbol(COINBASE, trade.pair)}, which this connection did not subscribe"
        )
