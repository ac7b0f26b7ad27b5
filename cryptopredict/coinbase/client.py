"""Coinbase Advanced Trade trade client: the `market_trades` channel of many products on one connection,
trades out, nothing lost or doubled. It has the Kraken client's shape (cryptopredict/kraken/client.py),
so the feed runs either.

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

import asyncio
import json
import logging
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from websockets.asyncio.client import connect

from cryptopredict.coinbase.protocol import (
    COINBASE,
    parse_market_trades,
    parse_status,
    parse_subscriptions,
    sequence_num,
    subscribe_requests,
)
from cryptopredict.coinbase.rest import CoinbaseRestClient, CoinbaseRestError, CoinbaseRestRefused
from cryptopredict.kraken.client import ConnectionDead, Rejected, backoff_delay
from cryptopredict.kraken.protocol import MalformedMessage, decode
from cryptopredict.models import Trade
from cryptopredict.venues import venue_symbol

logger = logging.getLogger(__name__)

# Coinbase takes at most 8 unauthenticated messages a second from one address.
SUBSCRIBES_PER_SECOND = 8


class SequenceGap(Exception):
    """A skipped sequence_num: messages of this connection are lost; reconnect and fill from REST."""


class CoinbaseTradeClient:
    exchange = COINBASE

    @staticmethod
    def rest_client(url: str, min_interval_s: float) -> CoinbaseRestClient:
        """The REST client that fills this venue's gaps (the feed builds it from the venue's settings)."""
        return CoinbaseRestClient(url, min_interval_s=min_interval_s)

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        rest: CoinbaseRestClient | None = None,
        heartbeat_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_future_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.pairs = list(pairs)
        # Product id -> project pair; a pair Coinbase cannot name is a configuration error, raised here.
        self.products = {venue_symbol(COINBASE, pair): pair for pair in self.pairs}
        self.rest = rest
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.max_future = timedelta(seconds=max_future_s)
        self.rng = rng or random.Random()
        self.status = "connecting"
        self.product_status: dict[str, str] = {}
        self.subscribed: set[str] = set()
        self.failed_pairs: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.last_trade_id: dict[str, int] = {}
        self.last_timestamp: dict[str, datetime] = {}
        # Pairs without a trade yet: the venue's time up to which REST or the stream has them all.
        self.quiet_since: dict[str, datetime] = {}
        self._next_sequence = 0

    @property
    def reconnects(self) -> int:
        return self.counts["reconnects"]

    async def events(self) -> AsyncIterator[Trade | Rejected]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Trade | Rejected]]:
        """What each venue message (or REST page) yields, in order: its accepted trades and rejects."""
        attempt = 0
        while True:
            try:
                await self._mark_quiet_pairs()  # before connecting: Coinbase wants a subscribe within 5 s
                async with connect(self.url, max_size=2**22, max_queue=4096, open_timeout=10) as ws:
                    self._next_sequence = 0  # numbers start again with every connection
                    for i, request in enumerate(subscribe_requests(self.products)):
                        if i and i % SUBSCRIBES_PER_SECOND == 0:
                            await asyncio.sleep(1.0)
                        await ws.send(request)
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
            except (
                OSError,
                ConnectionDead,
                SequenceGap,
                CoinbaseRestError,
                websockets.WebSocketException,
            ) as exc:
                self.counts["reconnects"] += 1
                delay = backoff_delay(attempt, self.backoff_base_s, self.max_backoff_s, self.rng)
                attempt += 1
                self.status = "reconnecting"
                logger.warning("coinbase connection lost (%s); reconnect %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)

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
        if self.rest is None:
            logger.warning("no REST endpoint configured: trades missed while disconnected are not filled")
            return
        until_s: float | None
        try:
            until_s = await self.rest.server_time()
        except CoinbaseRestRefused:
            until_s = None  # each pair asks again below, and a refusal there is its dead letter
        for pair, start in since.items():
            if start is None or (pair in self.failed_pairs and pair not in self.last_timestamp):
                continue
            try:
                async for trades, bad in self.rest.trades_since(pair, start, until_s):
                    batch = [self._reject(row.raw, row.reason) for row in bad] + self._accept(trades)
                    self.counts["gap_filled"] += sum(isinstance(event, Trade) for event in batch)
                    if batch:
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
        if status != self.status:
            log = logger.info if status == "online" else logger.warning
            log("coinbase status: %s (%s)", status, self.product_status)
            self.counts[f"status_{status}"] += 1
        self.status = status

    def _accept(self, trades: list[Trade]) -> list[Trade | Rejected]:
        """New trades in trade-id order (Coinbase sends newest first); repeats (snapshot, gap fill
        overlap) are dropped by trade id."""
        accepted: list[Trade | Rejected] = []
        latest_allowed = datetime.now(UTC) + self.max_future
        for trade in sorted(trades, key=lambda t: t.trade_id):
            if trade.pair not in self.pairs:
                reason = f"trade of product {venue_symbol(COINBASE, trade.pair)}, which this connection did not subscribe"
                accepted.append(self._reject(_trade_json(trade), reason))
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
