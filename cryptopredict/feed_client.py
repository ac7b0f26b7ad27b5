"""What the venues' trade clients share (cryptopredict/kraken, coinbase, binance client.py): the state the
feed and the metrics read, the reconnect loop with its backoff and watchdog, and the acceptance of trades.

A venue's client subclasses `VenueTradeClient` and says how it subscribes (`_subscribe`), what one message
yields (`_handle`), how it fills the gap after a reconnect (`_fill_gaps`) and which trades do not belong on
its connection (`_foreign`). A venue that reads its connection another way overrides `_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Generic, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection, connect

from cryptopredict.models import Trade
from cryptopredict.topics import Exchange
from cryptopredict.venue_rest import VenueRestClient, VenueRestError

RestT = TypeVar("RestT", bound=VenueRestClient)


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


async def send_paced(ws: ClientConnection, requests: Iterable[str], per_second: int) -> None:
    """Sends the requests, at most `per_second` in each second (a venue's limit on incoming messages)."""
    for i, request in enumerate(requests):
        if i and i % per_second == 0:
            await asyncio.sleep(1.0)
        await ws.send(request)


class VenueTradeClient(Generic[RestT]):
    """Many pairs of one venue on one connection, trades out, nothing lost or doubled: reconnects back off
    exponentially with jitter, capped; the last trade id and timestamp per pair are kept, and trades are
    de-duplicated by trade id."""

    exchange: Exchange
    rest_class: ClassVar[type[VenueRestClient]]  # the REST client that fills this venue's gaps
    # Failures after which the client reconnects, backing off.
    reconnect_errors: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        ConnectionDead,
        VenueRestError,
        websockets.WebSocketException,
    )
    connection_name: ClassVar[str]  # how the reconnect warning names the connection

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        rest: RestT | None = None,
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
        self._attempt = 0  # failed connections since one last delivered: the backoff's exponent
        self._log = logging.getLogger(type(self).__module__)

    @classmethod
    def rest_client(cls, url: str, min_interval_s: float) -> VenueRestClient:
        """The REST client that fills this venue's gaps (the feed builds it from the venue's settings)."""
        return cls.rest_class(url, min_interval_s=min_interval_s)

    @property
    def reconnects(self) -> int:
        return self.counts["reconnects"]

    async def events(self) -> AsyncIterator[Trade | Rejected]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Trade | Rejected]]:
        """What each venue message (or REST page) yields, in order: its accepted trades and rejects."""
        self._attempt = 0
        while True:
            try:
                async with contextlib.aclosing(self._connection()) as connection:
                    async for batch in connection:
                        yield batch
            except self.reconnect_errors as exc:
                self.counts["reconnects"] += 1
                delay = backoff_delay(self._attempt, self.backoff_base_s, self.max_backoff_s, self.rng)
                self._attempt += 1
                self.status = "reconnecting"
                self._log.warning(
                    "%s connection lost (%s); reconnect %d in %.1fs",
                    self.connection_name,
                    exc,
                    self._attempt,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _connection(self) -> AsyncGenerator[list[Trade | Rejected], None]:
        """One connection's batches: subscribe, fill the gap, then one message at a time under the watchdog.
        It ends by raising one of `reconnect_errors` (or by returning, to reconnect at once)."""
        async with connect(self.url, max_size=2**22, max_queue=4096, open_timeout=10) as ws:
            await self._subscribe(ws)
            # Fill before reading the stream, so no streamed trade moves last_trade_id past the gap.
            async for batch in self._fill_gaps():
                yield batch
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.heartbeat_timeout_s)
                except TimeoutError as exc:
                    self.counts["watchdog_timeouts"] += 1
                    raise ConnectionDead(f"no message for {self.heartbeat_timeout_s:.0f}s") from exc
                self._attempt = 0  # the link delivers again: the next failure starts a fresh backoff
                if batch := self._handle(raw):
                    yield batch

    async def _subscribe(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def _fill_gaps(self) -> AsyncIterator[list[Trade | Rejected]]:
        """The trades missed while disconnected, from REST, in batches."""
        raise NotImplementedError

    def _handle(self, raw: str | bytes) -> list[Trade | Rejected]:
        """One message's accepted trades and dead letters."""
        raise NotImplementedError

    def _foreign(self, trade: Trade) -> str | None:
        """Why the trade does not belong on this connection, or None when it does."""
        raise NotImplementedError

    def _accept(self, trades: Iterable[Trade]) -> list[Trade | Rejected]:
        """The new trades, in order, and the rejected ones; repeats (snapshot, gap fill overlap) are dropped
        by trade id."""
        latest_allowed = datetime.now(UTC) + self.max_future
        return [event for t in trades if (event := self._accept_trade(t, latest_allowed)) is not None]

    def _accept_trade(
        self, trade: Trade, latest_allowed: datetime | None = None, raw: str | None = None
    ) -> Trade | Rejected | None:
        """The trade if it is new; a Rejected (with `raw`, the message, if given) if it does not belong
        here or is far in the future; None for a repeat."""
        if (reason := self._foreign(trade)) is not None:
            return self._reject(raw or _trade_json(trade), reason)
        if trade.timestamp > (latest_allowed or datetime.now(UTC) + self.max_future):
            return self._reject(raw or _trade_json(trade), f"timestamp {trade.timestamp} is in the future")
        if trade.trade_id <= self.last_trade_id.get(trade.pair, -1):
            self.counts["duplicates_dropped"] += 1
            return None
        self.last_trade_id[trade.pair] = trade.trade_id
        self.last_timestamp[trade.pair] = trade.timestamp
        self.counts["trades"] += 1
        return trade

    def _gap_rest(self) -> RestT | None:
        """The REST client that fills a gap; without one, what was missed stays missing, said in a warning."""
        if self.rest is None:
            self._log.warning("no REST endpoint configured: trades missed while disconnected are not filled")
        return self.rest

    def _gap_filled(self, batch: list[Trade | Rejected]) -> list[Trade | Rejected]:
        """A batch of a gap fill, counted."""
        self.counts["gap_filled"] += sum(isinstance(event, Trade) for event in batch)
        return batch

    def _set_status(self, status: str, message: str, *args: object) -> None:
        """The venue's status as the venue tells it; a change is logged (`message % args`) and counted."""
        if status != self.status:
            log = self._log.info if status == "online" else self._log.warning
            log(message, *args)
            self.counts[f"status_{status}"] += 1
        self.status = status

    def _reject(self, raw: str, reason: str) -> Rejected:
        self.counts["rejected"] += 1
        return Rejected(raw, reason)


def _trade_json(trade: Trade) -> str:
    return json.dumps(trade.model_dump(mode="json"))
