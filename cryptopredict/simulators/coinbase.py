"""The replay exchange speaking Coinbase Advanced Trade: market data WebSocket and public REST on one port.

WebSocket (`ws://host:port`): `subscribe`/`unsubscribe` to `market_trades` (a snapshot of the last 50
trades per product, then one update per product and batch, newest trade first), `heartbeats` (about once
a second) and `status` (every product's status; `offline` during maintenance). Every channel message
carries the connection's `sequence_num`, from 0; a refused product gets `{"type": "error"}`.
REST (`http://host:port/api/v3/brokerage/...`): `time` (the replay clock), the public market trades
(`market/products/{id}/ticker`) and candles (`market/products/{id}/candles`), answered from the trades
that have already happened on the replay clock, in Coinbase's shapes and status codes.

Sources, replay clock and faults are the Kraken replay exchange's (simulators.exchange);
`CoinbaseFaults` adds lost messages: their sequence numbers are used, so the client sees the gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from cryptopredict.coinbase.protocol import (
    COINBASE,
    error_message,
    heartbeats_message,
    market_trades_message,
    status_message,
    subscriptions_message,
    trade_row,
    with_sequence,
)
from cryptopredict.coinbase.rest import (
    INTERVALS,
    MAX_CANDLES,
    PRODUCTS_PATH,
    TIME_PATH,
    TRADES_LIMIT,
    candles_response,
    time_response,
    trades_response,
)
from cryptopredict.kraken.protocol import format_timestamp
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import (
    HEARTBEAT_S,
    SNAPSHOT_SIZE,
    Faults,
    ReplayExchange,
    Session,
    json_response,
)
from cryptopredict.venue_rest import OhlcRow
from cryptopredict.venues import UnknownSymbol, project_pair, venue_symbol

logger = logging.getLogger(__name__)

CHANNELS = ("market_trades", "heartbeats", "status")
MALFORMED_KINDS = (
    "bad_json",
    "missing_field",
    "non_numeric_price",
    "negative_qty",
    "unknown_product",
    "future_timestamp",
    "unsubscribed_product",
    "bad_trade_id",
    "repeated_sequence",
)
# The venue's word for the replay's status: Coinbase takes products offline for maintenance.
PRODUCT_STATUS = {"online": "online", "maintenance": "offline"}


@dataclass(frozen=True)
class CoinbaseFaults(Faults):
    """The replay exchange's faults, and Coinbase's own: messages lost inside a connection."""

    skip_sequence_every: int | None = None  # every Nth trade update of a connection is lost ...
    skip_sequence_times: int = 3  # ... on the first N connections only


@dataclass(eq=False)
class CoinbaseSession(Session):
    """A connection: its channels and the numbering of what it sends."""

    channels: set[str] = field(default_factory=set)
    sequence: int = 0  # the next sequence_num
    updates: int = 0  # trade updates due to this connection, lost ones included
    skip_every: int | None = None

    async def send(self, message: str) -> None:
        """Numbers a channel message (an error message or broken text goes out as it is)."""
        if message.startswith('{"channel"'):
            message = with_sequence(message, self.sequence)
            self.sequence += 1
        await super().send(message)

    def lose_update(self) -> bool:
        """Whether the trade update now due is lost on the way (its number is used all the same)."""
        self.updates += 1
        if self.skip_every and self.updates % self.skip_every == 0:
            self.sequence += 1
            return True
        return False


def malformed_message(kind: str, trade: Trade, now: datetime) -> str:
    """A market_trades message broken in one way, built from a real trade (which is also sent intact)."""
    row: dict[str, Any] = trade_row(trade)
    if kind == "bad_json":
        # Cut short where not even its sequence_num can be read (and none of the connection's is used).
        return json.dumps({"events": [{"type": "update", "trades": [row]}], "channel": "market_trades"})[:40]
    if kind == "repeated_sequence":
        return "repeated_sequence"  # the session numbers it (CoinbaseReplayExchange._send_malformed)
    if kind == "missing_field":
        row.pop("price")
    elif kind == "non_numeric_price":
        row["price"] = "abc"
    elif kind == "negative_qty":
        row["size"] = "-" + row["size"]
    elif kind == "unknown_product":
        row["product_id"] = "NOPE"
    elif kind == "future_timestamp":
        row["time"] = format_timestamp(trade.timestamp + timedelta(days=365))
    elif kind == "unsubscribed_product":
        row["product_id"] = "NOPE-USD"  # a product Coinbase could list, which this connection did not ask for
    elif kind == "bad_trade_id":
        row["trade_id"] = "abc-123"
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    message = json.loads(market_trades_message("update", [], now))
    message["events"][0]["trades"] = [row]
    return json.dumps(message)


def _error(status: int, error: str, message: str) -> Response:
    return json_response(status, {"error": error, "message": message})


@dataclass
class CoinbaseReplayExchange(ReplayExchange):
    sequence_skipped: int = 0  # trade updates lost on purpose (CoinbaseFaults.skip_sequence_every)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._heartbeat_counter = 0
        self._products: dict[str, str] = {}  # BTC-USD -> BTC/USD

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _index_pairs(self) -> None:
        super()._index_pairs()
        self._products = {venue_symbol(COINBASE, pair): pair for pair in self._by_pair}

    def _now(self) -> datetime:
        """The replay clock; before the replay starts, the moment of the first trade (nothing happened)."""
        now = self.clock.now()
        if now is not None:
            return now
        return self.trades[0].timestamp if self.trades else datetime.now(UTC)

    # --- WebSocket ---------------------------------------------------------------------------------

    def _new_session(self, ws: ServerConnection, number: int) -> Session:
        f = self.faults
        lossy = isinstance(f, CoinbaseFaults) and number <= f.skip_sequence_times
        skip_every = f.skip_sequence_every if isinstance(f, CoinbaseFaults) and lossy else None
        return CoinbaseSession(ws, number, **self._session_faults(number), skip_every=skip_every)

    async def _on_open(self, session: Session) -> None:
        """Coinbase sends nothing before a subscription."""

    async def _on_request(self, session: Session, raw: str | bytes) -> None:
        assert isinstance(session, CoinbaseSession)
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            await session.send(error_message("malformed request: not JSON"))
            return
        kind = request.get("type") if isinstance(request, dict) else None
        channel = request.get("channel") if isinstance(request, dict) else None
        if kind not in ("subscribe", "unsubscribe") or channel not in CHANNELS:
            await session.send(error_message(f"unsupported request: type {kind!r}, channel {channel!r}"))
            return
        products = request.get("product_ids")
        products = products if isinstance(products, list) else []
        if kind == "unsubscribe":
            session.channels.discard(channel)
            for product in products:
                self._unsubscribe_product(session, product)
        elif channel == "market_trades":
            await self._subscribe_trades(session, products)
        else:
            session.channels.add(channel)
            if channel == "status":
                await session.send(self._status_snapshot("snapshot"))
        await session.send(subscriptions_message(self._subscriptions(session), self._now()))

    async def _subscribe_trades(self, session: CoinbaseSession, products: list[Any]) -> None:
        accepted = []
        for product in products:
            pair = self._products.get(product) if isinstance(product, str) else None
            if pair is None:
                await session.send(error_message(f"Failed to subscribe: unknown product id {product}"))
            elif {product, pair} & self.faults.subscribe_error_pairs:
                await session.send(error_message(f"Failed to subscribe to market_trades for {product}"))
            else:
                accepted.append(pair)
        if not accepted:
            return
        session.channels.add("market_trades")
        snapshot = []
        for pair in accepted:
            # Trades already sent as updates; the ones still to send follow as updates, so no overlap.
            sent = self._pair_sent[pair]
            snapshot += self._by_pair[pair][max(0, sent - SNAPSHOT_SIZE) : sent]
            session.symbols.add(pair)
            self.subscribers.setdefault(pair, set()).add(session)
        await session.send(market_trades_message("snapshot", snapshot, self._now()))
        self._started.set()

    def _unsubscribe_product(self, session: CoinbaseSession, product: Any) -> None:
        pair = self._products.get(product) if isinstance(product, str) else None
        if pair is not None:
            session.symbols.discard(pair)
            self.subscribers.get(pair, set()).discard(session)

    def _subscriptions(self, session: CoinbaseSession) -> dict[str, list[str]]:
        current: dict[str, list[str]] = {}
        if session.symbols:
            current["market_trades"] = sorted(venue_symbol(COINBASE, p) for p in session.symbols)
        for channel in ("heartbeats", "status"):
            if channel in session.channels:
                current[channel] = sorted(self._products) if channel == "status" else ["heartbeats"]
        return current

    async def _send_update(self, pair: str, trades: list[Trade]) -> None:
        self._pair_sent[pair] += len(trades)
        sessions = [s for s in self.subscribers.get(pair, ()) if isinstance(s, CoinbaseSession)]
        if not sessions:
            return
        message = market_trades_message("update", trades, self._now())
        for session in sessions:
            if session.lose_update():
                self.sequence_skipped += 1
                logger.info(
                    "fault: connection %d loses sequence_num %d", session.number, session.sequence - 1
                )
                continue
            await self._broadcast([session], message)
        self.updates_sent += 1
        every = self.faults.malformed_every
        if every and self.updates_sent % every == 0:
            kind = MALFORMED_KINDS[len(self.malformed_sent) % len(MALFORMED_KINDS)]
            self.malformed_sent.append(kind)
            for session in sessions:
                await self._send_malformed(session, kind, trades[-1])

    async def _send_malformed(self, session: CoinbaseSession, kind: str, trade: Trade) -> None:
        if kind == "repeated_sequence":
            # The previous number once more: a message the connection has already delivered.
            body = heartbeats_message(self._heartbeat_counter, self._now())
            message = with_sequence(body, max(0, session.sequence - 1))
        else:
            message = malformed_message(kind, trade, self._now())
        await self._broadcast([session], message)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.faults.stop_heartbeats:
                continue
            self._heartbeat_counter += 1
            message = heartbeats_message(self._heartbeat_counter, datetime.now(UTC))
            for session in [s for s in self._sessions if isinstance(s, CoinbaseSession)]:
                if "heartbeats" in session.channels:
                    await self._broadcast([session], message)

    def _status_snapshot(self, kind: str) -> str:
        status = PRODUCT_STATUS.get(self.status, self.status)
        return status_message(kind, dict.fromkeys(sorted(self._products), status), self._now())

    async def _set_status(self, status: str) -> None:
        self.status = status
        message = self._status_snapshot("update")
        for session in [s for s in self._sessions if isinstance(s, CoinbaseSession)]:
            if "status" in session.channels:
                await self._broadcast([session], message)

    # --- REST --------------------------------------------------------------------------------------

    def _rest(self, target: str) -> Response:
        self.rest_requests += 1
        n, f = self.rest_requests, self.faults
        if f.rest_429_every and n % f.rest_429_every == 0:
            return json_response(
                429, {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}, (("Retry-After", "1"),)
            )
        if f.rest_500_every and n % f.rest_500_every == 0:
            return _error(500, "INTERNAL", "internal error")
        url = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if url.path == TIME_PATH:
            return json_response(200, time_response(self._now()))
        prefix, _, rest = url.path.partition(PRODUCTS_PATH + "/")
        product, _, endpoint = rest.partition("/")
        routes: dict[str, Callable[[str, dict[str, str]], dict[str, Any]]] = {
            "ticker": self._rest_market_trades,
            "candles": self._rest_candles,
        }
        if prefix or endpoint not in routes:
            return _error(404, "NOT_FOUND", f"no route {url.path}")
        try:
            pair = project_pair(COINBASE, product)
        except UnknownSymbol:
            pair = ""
        if pair not in self._by_pair:
            return _error(404, "NOT_FOUND", f"product {product} not found")
        try:
            return json_response(200, routes[endpoint](pair, query))
        except (KeyError, ValueError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"invalid arguments: {exc}")

    def _rest_market_trades(self, pair: str, query: dict[str, str]) -> dict[str, Any]:
        limit = int(query.get("limit", "0"))
        if not 0 < limit <= TRADES_LIMIT:
            raise ValueError(f"limit must be 1..{TRADES_LIMIT}")
        self._happen_due()
        happened, ns = self._pair_happened[pair], self._ns[pair]
        lo = bisect_left(ns, _ns(query["start"]), 0, happened) if "start" in query else 0
        hi = bisect_left(ns, _ns(query["end"]), lo, happened) if "end" in query else happened
        return trades_response(self._by_pair[pair][max(lo, hi - limit) : hi])

    def _rest_candles(self, pair: str, query: dict[str, str]) -> dict[str, Any]:
        interval_s = INTERVALS.get(query.get("granularity", ""))
        if interval_s is None:
            raise ValueError(f"granularity must be one of {', '.join(INTERVALS)}")
        start, end = int(query["start"]), int(query["end"])
        if (end - start) // interval_s + 1 > MAX_CANDLES:
            raise ValueError(f"number of candles requested should be at most {MAX_CANDLES}")
        self._happen_due()
        trades = self._by_pair[pair][: self._pair_happened[pair]]
        return candles_response(candle_rows(trades, interval_s, start, end))


def candle_rows(trades: list[Trade], interval_s: int, start_s: int, end_s: int) -> list[OhlcRow]:
    """Candles starting in [start_s, end_s) that have trades; the newest may still be forming."""
    windows: dict[int, list[Trade]] = {}
    for trade in trades:
        window = math.floor(trade.timestamp.timestamp()) // interval_s * interval_s
        if start_s <= window < end_s:
            windows.setdefault(window, []).append(trade)
    rows = []
    for window, group in sorted(windows.items()):
        prices = [t.price for t in group]
        volume = sum(t.qty for t in group)
        rows.append(OhlcRow(window, prices[0], max(prices), min(prices), prices[-1], math.nan, volume, 0))
    return rows


def _ns(seconds: str) -> int:
    return round(float(seconds) * 1e9)
