"""Binance spot trade client: many pairs on one connection, trades out in batches, nothing lost or doubled.

The same code talks to wss://stream.binance.com:9443 and to the local replay exchange speaking Binance.
- It connects to `<ws_url>/ws` (a URL with a path of its own, a raw `/ws/...` or combined `/stream?...`
  stream, is used as given) and sends one SUBSCRIBE per pair, so a refused pair is told apart.
- Binance sends one trade per message; the client hands on every message already received at once
  (up to `max_batch`), so the feed pays its per-record cost per burst, not per trade.
- A watchdog treats a connection with no message and no ping frame (Binance pings every 20 s) for
  `heartbeat_timeout_s` as dead; reconnects back off exponentially with jitter, capped. Binance closes
  every connection after 24 hours, so the client reconnects by itself before that (`max_connection_s`).
- Trade ids are contiguous per symbol. The last id per pair is kept; after a reconnect, and whenever
  the stream skips ids, the missing trades are read from REST `historicalTrades?fromId=`; everything
  is de-duplicated by trade id.
- Malformed messages, unknown symbols, trades of a symbol this connection did not subscribe, timestamps
  far in the future and refused subscriptions come out as `Rejected` with the raw payload and a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import Event
from websockets.typing import Data

from cryptopredict.binance.protocol import (
    BINANCE,
    SubscribeReply,
    parse_message,
    subscribe_request,
)
from cryptopredict.binance.rest import BinanceRestClient
from cryptopredict.feed_client import ConnectionDead, Rejected, VenueTradeClient, send_paced
from cryptopredict.kraken.protocol import MalformedMessage
from cryptopredict.models import Trade
from cryptopredict.models.market import MAX_TRADE_BATCH
from cryptopredict.venues import UnknownSymbol, project_pair, venue_symbol

logger = logging.getLogger(__name__)

# Binance closes a connection after 24 hours; leaving a little earlier makes it our choice when.
MAX_CONNECTION_S = 23.5 * 3600
# Binance accepts at most 5 incoming messages a second per connection.
SUBSCRIBES_PER_SECOND = 4


class _Watched(ClientConnection):
    """A connection that remembers when a data or ping frame last arrived (pings never reach recv())."""

    last_alive = 0.0

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is not Opcode.PONG:
            self.last_alive = time.monotonic()


class _Closed:
    """Put on the message queue when the reader ends: the connection is gone."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class BinanceTradeClient(VenueTradeClient[BinanceRestClient]):
    exchange = BINANCE
    rest_class = BinanceRestClient
    connection_name = BINANCE

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        rest: BinanceRestClient | None = None,
        heartbeat_timeout_s: float = 30.0,
        *,
        max_connection_s: float = MAX_CONNECTION_S,
        max_batch: int = MAX_TRADE_BATCH,
        **options: Any,
    ) -> None:
        super().__init__(url, pairs, rest, heartbeat_timeout_s, **options)
        self.max_connection_s = max_connection_s
        self.max_batch = max_batch
        self._unreported: list[Rejected] = []
        self._streamable: list[str] = []
        for pair in self.pairs:
            try:
                if project_pair(BINANCE, venue_symbol(BINANCE, pair)) != pair:
                    raise UnknownSymbol(f"{pair} reads back as another pair")
                self._streamable.append(pair)
            except UnknownSymbol as exc:
                self.failed_pairs[pair] = str(exc)
                self._unreported.append(self._reject(pair, f"subscription failed for {pair}: {exc}"))
        self._streamable_set = set(self._streamable)
        self._requests: dict[int, str] = {}  # SUBSCRIBE id -> pair of the open connection

    @property
    def stream_url(self) -> str:
        """The raw-stream endpoint `/ws` under a bare base URL; a URL with a path is used as it is."""
        if urlsplit(self.url).path.strip("/"):
            return self.url
        return self.url.rstrip("/") + "/ws"

    async def _connection(self) -> AsyncGenerator[list[Trade | Rejected], None]:
        """Accepted trades and rejects, in order: what had arrived when the last batch was taken, or a REST
        page. Ends, to be replaced at once, when the connection is `max_connection_s` old."""
        if self._unreported:
            yield list(self._unreported)
            self._unreported.clear()
        # No per-message compression: trade messages are small and many, so it costs more CPU than it saves.
        async with connect(
            self.stream_url,
            max_size=2**20,
            open_timeout=10,
            compression=None,
            create_connection=_Watched,
        ) as ws:
            assert isinstance(ws, _Watched)
            ws.last_alive = opened = time.monotonic()
            await self._subscribe(ws)
            self.status = "online"
            queue: asyncio.Queue[Data | _Closed] = asyncio.Queue(maxsize=4 * self.max_batch)
            reader = asyncio.create_task(_read(ws, queue))
            try:
                # Fill before reading the stream, so no streamed trade moves last_trade_id past the gap.
                async for batch in self._fill_gaps():
                    yield batch
                while True:
                    raws, closed = await self._next_messages(ws, queue)
                    self._attempt = 0  # the link delivers again: the next failure starts a fresh backoff
                    async for batch in self._handle_messages(raws):
                        yield batch
                    if closed is not None:
                        raise ConnectionDead(f"connection closed: {closed.error or 'by the server'}")
                    if time.monotonic() - opened > self.max_connection_s:
                        break
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        self.counts["rotations"] += 1
        logger.info("replacing a connection %.0fs old before Binance closes it", self.max_connection_s)

    async def _subscribe(self, ws: ClientConnection) -> None:
        """One SUBSCRIBE per pair (ids 1..), paced below Binance's limit of incoming messages."""
        self._requests = dict(enumerate(self._streamable, start=1))
        requests = [subscribe_request([pair], number) for number, pair in self._requests.items()]
        await send_paced(ws, requests, SUBSCRIBES_PER_SECOND)

    async def _next_messages(
        self, ws: _Watched, queue: asyncio.Queue[Data | _Closed]
    ) -> tuple[list[Data], _Closed | None]:
        """The next message, waited for under the watchdog, and every one queued behind it."""
        while True:
            if not queue.empty():  # what arrived while the caller was busy comes before the watchdog
                item = queue.get_nowait()
                break
            remaining = self.heartbeat_timeout_s - (time.monotonic() - ws.last_alive)
            if remaining <= 0:
                self.counts["watchdog_timeouts"] += 1
                raise ConnectionDead(f"no message or ping for {self.heartbeat_timeout_s:.0f}s")
            try:
                async with asyncio.timeout(remaining):
                    item = await queue.get()
                break
            except TimeoutError:
                continue  # a ping may have arrived meanwhile: the loop head decides
        raws: list[Data] = []
        while not isinstance(item, _Closed):
            raws.append(item)
            if len(raws) >= self.max_batch or queue.empty():
                return raws, None
            item = queue.get_nowait()
        return raws, item

    async def _fill_gaps(self) -> AsyncIterator[list[Trade | Rejected]]:
        if not self.last_trade_id or self._gap_rest() is None:
            return
        for pair, last_id in list(self.last_trade_id.items()):
            if not self._wanted(pair):
                continue  # refused before: if this connection's subscription works, the stream's jump fills it
            async for batch in self._fill(pair, last_id + 1):
                yield batch

    async def _fill(
        self, pair: str, from_id: int, until_id: int | None = None
    ) -> AsyncIterator[list[Trade | Rejected]]:
        assert self.rest is not None
        async for trades in self.rest.trades_from(pair, from_id, until_id):
            if batch := self._gap_filled(self._accept(trades)):
                yield batch

    async def _handle_messages(self, raws: list[Data]) -> AsyncIterator[list[Trade | Rejected]]:
        ingested_at = datetime.now(UTC)
        out: list[Trade | Rejected] = []
        for raw in raws:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            try:
                message = parse_message(raw, ingested_at)
            except MalformedMessage as exc:
                out.append(self._reject(text, str(exc)))
                continue
            if isinstance(message, SubscribeReply):
                if (rejected := self._on_reply(message, text)) is not None:
                    out.append(rejected)
                continue
            last = self.last_trade_id.get(message.pair)
            if (
                last is not None
                and message.trade_id > last + 1
                and self.rest is not None
                and self._wanted(message.pair)
                and message.timestamp <= datetime.now(UTC) + self.max_future
            ):
                # Ids are contiguous per symbol: the stream lost trades, which REST still has.
                self.counts["stream_gaps"] += 1
                if out:
                    yield out
                    out = []
                missing = message.trade_id - last - 1
                async for batch in self._fill(message.pair, last + 1, message.trade_id):
                    yield batch
                if (unfilled := message.trade_id - 1 - self.last_trade_id[message.pair]) > 0:
                    self.counts["gap_unfilled"] += unfilled
                    logger.warning("%d of %d missing %s trades not on REST", unfilled, missing, message.pair)
            if (event := self._accept_trade(message, raw=text)) is not None:
                out.append(event)
        if out:
            yield out

    def _on_reply(self, reply: SubscribeReply, text: str) -> Rejected | None:
        pair = self._requests.get(reply.id) if isinstance(reply.id, int) else None
        if pair is None:
            self.counts["unexpected_replies"] += 1
            return self._reject(text, f"reply to a request this connection did not send: id {reply.id!r}")
        if reply.error is None:
            self.subscribed.add(pair)
            self.failed_pairs.pop(pair, None)
            return None
        self.subscribed.discard(pair)
        self.failed_pairs[pair] = reply.error
        logger.error("subscription for %s failed: %s", pair, reply.error)
        return self._reject(text, f"subscription failed for {pair}: {reply.error}")

    def _wanted(self, pair: str) -> bool:
        """Whether this connection asked for the pair's trades (and was not refused)."""
        return pair in self._streamable_set and pair not in self.failed_pairs

    def _foreign(self, trade: Trade) -> str | None:
        return (
            None
            if self._wanted(trade.pair)
            else f"trade of {trade.pair} on a connection not subscribed to it"
        )


async def _read(ws: ClientConnection, queue: asyncio.Queue[Data | _Closed]) -> None:
    """Moves messages from the connection onto the queue; a full queue holds the connection back."""
    error: BaseException | None = None
    try:
        async for raw in ws:
            await queue.put(raw)
    except websockets.ConnectionClosed as exc:
        error = exc
    await queue.put(_Closed(error))
