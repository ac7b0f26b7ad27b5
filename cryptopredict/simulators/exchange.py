"""A local exchange that is the offline twin of Kraken: WebSocket v2 trade channel and the public REST
`Trades`/`OHLC` endpoints on one port, replaying trades at a chosen speed, with fault modes.

WebSocket (`ws://host:port/v2`): `status` on connect, one subscribe ack per symbol, a snapshot of the
last 50 trades, batched `update` messages, heartbeats about once a second and ping/pong.
REST (`http://host:port/0/public/...`): plain HTTP GETs on the same port, answered in Kraken's shapes
from the trades that have already happened on the replay clock.

The replay clock starts at the first subscription. With a numeric `speed` it runs `speed` times
faster than the wall clock: a trade with event time t happens (t - first_trade_time) / speed wall
seconds later. With `speed=None` (or "max") trades happen as fast as the clients read: each batch
(all trades of one timestamp) is sent, awaited, and only then does the next one happen.

Faults (`Faults`) make the exchange misbehave the way real ones do, so the feed's recovery paths can
be tested; `served_trade_ids` records what happened, so a test can check that nothing was lost.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from cryptopredict.kraken.protocol import format_timestamp, trade_message, trade_payload
from cryptopredict.kraken.rest import ohlc_response, rest_pair, to_ns, trades_response
from cryptopredict.models import Trade
from cryptopredict.venue_rest import OhlcRow

logger = logging.getLogger(__name__)

SNAPSHOT_SIZE = 50
MAX_SPEED_BATCH = 100
HEARTBEAT_S = 1.0
TRADES_PAGE = 1000
OHLC_ROWS = 720
OHLC_INTERVALS_MIN = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
MALFORMED_KINDS = (
    "bad_json",
    "missing_field",
    "non_numeric_price",
    "negative_qty",
    "unknown_symbol",
    "future_timestamp",
)


@dataclass(frozen=True)
class Faults:
    """What goes wrong during a run. Message counts are per connection and include every message
    sent on it (status, acks, snapshot, updates, heartbeats, pongs); update counts are exchange-wide
    and count update messages that reached at least one subscriber."""

    drop_after: int | None = None  # close the connection (no close frame) after K messages ...
    drop_times: int = 1  # ... on the first N connections only, so a client can recover
    stop_heartbeats: bool = False  # never send heartbeats
    silence_after: int | None = None  # after K messages send nothing more, socket left open ...
    silence_times: int = 1  # ... on the first N connections only
    malformed_every: int | None = None  # after every Nth update, inject one extra malformed message
    subscribe_error_pairs: frozenset[str] = frozenset()  # subscribe answers success false
    maintenance_after: int | None = None  # after K updates: status maintenance, pause, status online
    maintenance_s: float = 5.0
    rest_429_every: int | None = None  # every Nth REST request: 429 with Retry-After: 1
    rest_500_every: int | None = None  # every Nth REST request: 500


def parse_speed(speed: float | str | None) -> float | None:
    """`None`/"max" -> None (as fast as clients read); anything else is a positive factor."""
    if speed is None or (isinstance(speed, str) and speed.lower() == "max"):
        return None
    factor = float(speed)
    if factor <= 0:
        raise ValueError(f"speed must be positive or 'max', got {speed!r}")
    return factor


@dataclass
class ReplayClock:
    """Event time of the replay. Timed: origin + elapsed wall time (minus pauses) x speed. Max speed:
    set explicitly to each batch's timestamp as it is sent."""

    speed: float | None
    origin_event: datetime | None = None
    origin_wall: float = 0.0
    paused_since: float | None = None
    current: datetime | None = None  # max speed only

    def start(self, event: datetime) -> None:
        self.origin_event, self.origin_wall, self.current = event, time.monotonic(), event

    def now(self) -> datetime | None:
        if self.origin_event is None or self.speed is None:
            return self.current
        wall = self.paused_since if self.paused_since is not None else time.monotonic()
        return self.origin_event + timedelta(seconds=(wall - self.origin_wall) * self.speed)

    def wall_delay(self, event: datetime) -> float:
        """Wall seconds until `event` is due (0 at max speed)."""
        if self.speed is None or self.origin_event is None:
            return 0.0
        due = self.origin_wall + (event - self.origin_event).total_seconds() / self.speed
        return max(0.0, due - time.monotonic())

    def pause(self) -> None:
        self.paused_since = time.monotonic()

    def resume(self) -> None:
        if self.paused_since is not None:
            self.origin_wall += time.monotonic() - self.paused_since
            self.paused_since = None


@dataclass(eq=False)
class Session:
    """One WebSocket connection and the faults that apply to it."""

    ws: ServerConnection
    number: int  # 1 for the first connection of the run
    drop_after: int | None = None
    silence_after: int | None = None
    sent: int = 0
    dropped: bool = False
    silent: bool = False
    symbols: set[str] = field(default_factory=set)

    async def send(self, message: str) -> None:
        """Sends unless a fault says otherwise; raises ConnectionClosed if the peer is gone."""
        if self.dropped or self.silent:
            return
        if self.silence_after is not None and self.sent >= self.silence_after:
            self.silent = True
            logger.info("fault: connection %d goes silent after %d messages", self.number, self.sent)
            return
        await self.ws.send(message)
        self.sent += 1
        if self.drop_after is not None and self.sent >= self.drop_after:
            self.dropped = True
            logger.info("fault: dropping connection %d after %d messages", self.number, self.sent)
            # Closing the transport (not the WebSocket) flushes what was sent, then cuts the TCP
            # connection without a close frame, as a network failure would.
            self.ws.transport.close()


class SessionFaults(TypedDict):
    drop_after: int | None
    silence_after: int | None


def malformed_message(kind: str, trade: Trade) -> str:
    """An update message broken in one way, built from a real trade (which is also sent intact)."""
    row = trade_payload(trade)
    if kind == "bad_json":
        return trade_message("update", [trade])[:40]
    if kind == "missing_field":
        row.pop("price")
    elif kind == "non_numeric_price":
        row["price"] = "abc"
    elif kind == "negative_qty":
        row["qty"] = -trade.qty
    elif kind == "unknown_symbol":
        row["symbol"] = "NOPE/USD"
    elif kind == "future_timestamp":
        row["timestamp"] = format_timestamp(trade.timestamp + timedelta(days=365))
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps({"channel": "trade", "type": "update", "data": [row]})


def result_key(ws_pair: str) -> str:
    """Kraken's key in `result`: classic assets are X/Z-prefixed (BTC/USD -> XXBTZUSD), others not."""
    base, quote = (rest_pair(f"{asset}/") for asset in ws_pair.split("/"))
    if base in {"XBT", "ETH", "LTC", "XRP", "XLM", "XMR", "ETC", "ZEC", "XDG"} and quote in {
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CAD",
    }:
        return f"X{base}Z{quote}"
    return base + quote


def parse_since_ns(value: str) -> int:
    """Kraken's `since` is nanoseconds; a value below 1e12 is taken as (possibly fractional) seconds."""
    number = float(value) if any(c in value for c in ".eE") else int(value)
    return round(number * 1e9) if number < 1e12 else int(number)


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(payload).encode()
    all_headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *headers,
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, all_headers, body)


@dataclass
class ReplayExchange:
    trades: list[Trade]
    speed: float | str | None = 60.0
    host: str = "127.0.0.1"
    port: int = 0
    faults: Faults = field(default_factory=Faults)
    subscribers: dict[str, set[Session]] = field(default_factory=dict)
    sent: int = 0  # trades sent over WebSocket (an index into the time-sorted `trades`)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    served_trade_ids: dict[str, set[int]] = field(default_factory=dict)  # trades that have happened
    status: str = "online"
    connections: int = 0
    updates_sent: int = 0
    rest_requests: int = 0
    malformed_sent: list[str] = field(default_factory=list)
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _server: Server | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sessions: set[Session] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.clock = ReplayClock(parse_speed(self.speed))
        self._happened = 0  # trades[:_happened] have happened on the replay clock
        self._maintenance_done = False
        # Per pair: trades in time order, their nanosecond timestamps, how many happened / were sent.
        self._by_pair: dict[str, list[Trade]] = {}
        self._ns: dict[str, list[int]] = {}
        self._pair_happened: dict[str, int] = {}
        self._pair_sent: dict[str, int] = {}
        self._names: dict[str, str] = {}  # WS name, REST altname or result key -> WS name

    @property
    def pairs(self) -> set[str]:
        return {t.pair for t in self.trades}

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v2"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self.trades.sort(key=lambda t: (t.timestamp, t.trade_id))  # in place, as callers rely on
        self._index_pairs()
        self._server = await serve(self._handle, self.host, self.port, process_request=self._process_request)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._replay()), asyncio.create_task(self._heartbeat())]
        speed = "max" if self.clock.speed is None else f"{self.clock.speed:g}x"
        logger.info(
            "replay exchange on %s (REST %s): %d trades at %s",
            self.url,
            self.rest_url,
            len(self.trades),
            speed,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _index_pairs(self) -> None:
        self._by_pair = {}
        for trade in self.trades:
            self._by_pair.setdefault(trade.pair, []).append(trade)
        self._ns = {pair: [to_ns(t.timestamp) for t in trades] for pair, trades in self._by_pair.items()}
        self._pair_happened = dict.fromkeys(self._by_pair, 0)
        self._pair_sent = dict.fromkeys(self._by_pair, 0)
        self.served_trade_ids = {pair: set() for pair in self._by_pair}
        for pair in self._by_pair:
            for name in (pair, rest_pair(pair), result_key(pair)):
                self._names[name.upper()] = pair

    # --- the replay clock --------------------------------------------------------------------------

    def _happen_due(self) -> None:
        """Moves every trade the clock has reached into the past (served via REST from now on)."""
        now = self.clock.now()
        while (
            now is not None
            and self._happened < len(self.trades)
            and self.trades[self._happened].timestamp <= now
        ):
            trade = self.trades[self._happened]
            self._pair_happened[trade.pair] += 1
            self.served_trade_ids[trade.pair].add(trade.trade_id)
            self._happened += 1

    async def _replay(self) -> None:
        await self._started.wait()
        if self.trades:
            self.clock.start(self.trades[0].timestamp)
        while self.sent < len(self.trades):
            upcoming = self.trades[self.sent]
            await asyncio.sleep(self.clock.wall_delay(upcoming.timestamp))
            if self.clock.speed is None:
                # As fast as the client reads: the next MAX_SPEED_BATCH trades happen at once and go out
                # in one message per pair, as Kraken batches a busy moment.
                ahead = min(self.sent + MAX_SPEED_BATCH, len(self.trades)) - 1
                self.clock.current = self.trades[ahead].timestamp
            self._happen_due()
            # Everything due by now goes out together, one message per pair, like Kraken's batches.
            batch: dict[str, list[Trade]] = {}
            for trade in self.trades[self.sent : self._happened]:
                batch.setdefault(trade.pair, []).append(trade)
            self.sent = self._happened
            for pair, trades in batch.items():
                await self._send_update(pair, trades)
            await self._maybe_maintenance()
            await asyncio.sleep(0)  # at max speed, let heartbeats, pings and REST in between batches
        self.finished.set()
        logger.info("replay finished: %d trades sent", self.sent)

    async def _send_update(self, pair: str, trades: list[Trade]) -> None:
        self._pair_sent[pair] += len(trades)
        sessions = list(self.subscribers.get(pair, ()))
        if not sessions:
            return
        await self._broadcast(sessions, trade_message("update", trades))
        self.updates_sent += 1
        every = self.faults.malformed_every
        if every and self.updates_sent % every == 0:
            kind = MALFORMED_KINDS[len(self.malformed_sent) % len(MALFORMED_KINDS)]
            self.malformed_sent.append(kind)
            await self._broadcast(sessions, malformed_message(kind, trades[-1]))

    async def _broadcast(self, sessions: list[Session], message: str) -> None:
        for session in sessions:
            try:
                await session.send(message)
            except websockets.ConnectionClosed:
                self._forget(session)

    async def _maybe_maintenance(self) -> None:
        after = self.faults.maintenance_after
        if after is None or self._maintenance_done or self.updates_sent < after:
            return
        self._maintenance_done = True
        logger.info("fault: maintenance for %.1fs", self.faults.maintenance_s)
        self.clock.pause()  # no trading during maintenance: event time stands still
        await self._set_status("maintenance")
        await asyncio.sleep(self.faults.maintenance_s)
        self.clock.resume()
        await self._set_status("online")

    async def _set_status(self, status: str) -> None:
        self.status = status
        await self._broadcast(list(self._sessions), self._status_message())

    def _status_message(self) -> str:
        return json.dumps(
            {"channel": "status", "type": "update", "data": [{"system": self.status, "api_version": "v2"}]}
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.faults.stop_heartbeats:
                continue
            await self._broadcast([s for s in self._sessions if s.symbols], '{"channel":"heartbeat"}')

    # --- WebSocket ---------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        session = self._new_session(ws, self.connections)
        self._sessions.add(session)
        try:
            await self._on_open(session)
            async for raw in ws:
                await self._on_request(session, raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._forget(session)

    def _new_session(self, ws: ServerConnection, number: int) -> Session:
        return Session(ws, number, **self._session_faults(number))

    def _session_faults(self, number: int) -> SessionFaults:
        """The connection faults that apply to the `number`th connection."""
        f = self.faults
        return SessionFaults(
            drop_after=f.drop_after if number <= f.drop_times else None,
            silence_after=f.silence_after if number <= f.silence_times else None,
        )

    async def _on_open(self, session: Session) -> None:
        """What a new connection is sent before any request: Kraken's status."""
        await session.send(self._status_message())

    def _forget(self, session: Session) -> None:
        self._sessions.discard(session)
        for conns in self.subscribers.values():
            conns.discard(session)

    async def _on_request(self, session: Session, raw: str | bytes) -> None:
        time_in = format_timestamp(datetime.now(UTC))
        try:
            request: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            await session.send(
                json.dumps({"error": "Malformed request", "success": False, "time_in": time_in})
            )
            return
        method, req_id = request.get("method"), request.get("req_id")
        params = request.get("params") or {}
        if method == "ping":
            reply = {"method": "pong", "req_id": req_id, "time_in": time_in}
            await session.send(json.dumps(reply | {"time_out": format_timestamp(datetime.now(UTC))}))
        elif method in ("subscribe", "unsubscribe") and params.get("channel") == "trade":
            for symbol in params.get("symbol", []):
                if method == "subscribe":
                    await self._subscribe(session, symbol, req_id, time_in, params.get("snapshot", True))
                else:
                    await self._unsubscribe(session, symbol, req_id, time_in)
            if method == "subscribe":
                self._started.set()
        else:
            error = {"method": method, "error": "Unsupported request", "success": False, "req_id": req_id}
            await session.send(json.dumps(error | {"time_in": time_in}))

    async def _subscribe(
        self, session: Session, symbol: str, req_id: Any, time_in: str, snapshot: bool
    ) -> None:
        ack: dict[str, Any] = {"method": "subscribe", "req_id": req_id, "time_in": time_in}
        if symbol not in self._by_pair:
            ack |= {"success": False, "error": f"Currency pair not supported {symbol}", "symbol": symbol}
        elif symbol in self.faults.subscribe_error_pairs:
            ack |= {"success": False, "error": f"EService:Unavailable {symbol}", "symbol": symbol}
        else:
            ack |= {"success": True, "result": {"channel": "trade", "symbol": symbol, "snapshot": snapshot}}
        await session.send(json.dumps(ack | {"time_out": format_timestamp(datetime.now(UTC))}))
        if not ack["success"]:
            return
        if snapshot:
            # Trades already sent as updates; the ones still to send follow as updates, so no overlap.
            sent = self._pair_sent[symbol]
            await session.send(
                trade_message("snapshot", self._by_pair[symbol][max(0, sent - SNAPSHOT_SIZE) : sent])
            )
        session.symbols.add(symbol)
        self.subscribers.setdefault(symbol, set()).add(session)

    async def _unsubscribe(self, session: Session, symbol: str, req_id: Any, time_in: str) -> None:
        session.symbols.discard(symbol)
        self.subscribers.get(symbol, set()).discard(session)
        ack = {"method": "unsubscribe", "req_id": req_id, "success": True, "time_in": time_in}
        await session.send(json.dumps(ack | {"result": {"channel": "trade", "symbol": symbol}}))

    # --- REST --------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """WebSocket upgrades pass through; any other GET is a REST call answered right here."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        return self._rest(request.path)

    def _rest(self, target: str) -> Response:
        self.rest_requests += 1
        n, f = self.rest_requests, self.faults
        if f.rest_429_every and n % f.rest_429_every == 0:
            return json_response(429, {"error": ["EAPI:Rate limit exceeded"]}, (("Retry-After", "1"),))
        if f.rest_500_every and n % f.rest_500_every == 0:
            return json_response(500, {"error": ["EService:Internal error"]})
        url = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        routes: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
            "/0/public/Trades": self._rest_trades,
            "/0/public/OHLC": self._rest_ohlc,
            "/0/public/SystemStatus": self._rest_status,
        }
        handler = routes.get(url.path)
        if handler is None:
            return json_response(404, {"error": ["EGeneral:Unknown method"]})
        try:
            payload = handler(query)
        except ValueError as exc:
            payload = {"error": [f"EGeneral:Invalid arguments:{exc}"]}
        return json_response(200, payload)  # Kraken reports bad queries in the body, with 200

    def _rest_status(self, query: dict[str, str]) -> dict[str, Any]:
        return {
            "error": [],
            "result": {"status": self.status, "timestamp": format_timestamp(datetime.now(UTC))},
        }

    def _rest_trades(self, query: dict[str, str]) -> dict[str, Any]:
        pair = self._names.get(query.get("pair", "").upper())
        if pair is None:
            return {"error": ["EQuery:Unknown asset pair"]}
        self._happen_due()
        happened, ns = self._pair_happened[pair], self._ns[pair]
        count = max(1, min(TRADES_PAGE, int(query.get("count", TRADES_PAGE))))
        if "since" not in query:  # Kraken: without `since`, the most recent trades
            lo, hi = max(0, happened - count), happened
            last = ns[hi - 1] if hi else 0
        else:
            since = parse_since_ns(query["since"])
            lo = bisect_right(ns, since, 0, happened)
            hi = _page_end(ns, lo, min(happened, lo + count), happened)
            last = ns[hi - 1] if hi > lo else since
        return trades_response(result_key(pair), self._by_pair[pair][lo:hi], last)

    def _rest_ohlc(self, query: dict[str, str]) -> dict[str, Any]:
        pair = self._names.get(query.get("pair", "").upper())
        if pair is None:
            return {"error": ["EQuery:Unknown asset pair"]}
        minutes = int(query.get("interval", 1))
        if minutes not in OHLC_INTERVALS_MIN:
            raise ValueError("interval")
        since = int(float(query.get("since", 0)))
        since = since // 1_000_000_000 if since >= 1e12 else since
        self._happen_due()
        now = self.clock.now()
        trades = self._by_pair[pair][: self._pair_happened[pair]]
        if now is None or not trades:
            return ohlc_response(result_key(pair), [], since)
        rows = ohlc_rows(trades, minutes * 60, int(now.timestamp()), since)
        closed = [r.time for r in rows[:-1]]  # every row but the forming last one is closed
        return ohlc_response(result_key(pair), rows, closed[-1] if closed else since)


def _page_end(ns: list[int], lo: int, hi: int, happened: int) -> int:
    """Never split trades of one timestamp across pages: `since` is exclusive, so the rest of the
    group would be lost. Cut before the group, or take the whole group if it fills the page."""
    if hi >= happened or hi <= lo or ns[hi] != ns[hi - 1]:
        return hi
    group_start = bisect_left(ns, ns[hi - 1], lo, hi)
    return group_start if group_start > lo else bisect_right(ns, ns[hi - 1], lo, happened)


def ohlc_rows(trades: list[Trade], interval_s: int, now_s: int, since_s: int) -> list[OhlcRow]:
    """Contiguous candles up to the one containing `now_s` (still forming), at most 720, starting
    after `since_s`; intervals without trades repeat the previous close with zero volume."""
    windows = trade_windows(trades, interval_s)
    forming = now_s // interval_s * interval_s
    first = max(
        min(windows), (since_s // interval_s + 1) * interval_s, forming - (OHLC_ROWS - 1) * interval_s
    )
    return contiguous_candles(windows, interval_s, first, forming)


def trade_windows(trades: list[Trade], interval_s: int) -> dict[int, list[Trade]]:
    """Trades (in time order) by the start of their `interval_s` window, in unix seconds."""
    windows: dict[int, list[Trade]] = {}
    for trade in trades:
        windows.setdefault(int(trade.timestamp.timestamp()) // interval_s * interval_s, []).append(trade)
    return windows


def contiguous_candles(
    windows: dict[int, list[Trade]], interval_s: int, first: int, last: int
) -> list[OhlcRow]:
    """A candle for every window from `first` to `last` (starts); windows without trades repeat the
    previous close with zero volume."""
    starts = sorted(windows)
    before = bisect_left(starts, first)
    close = windows[starts[before - 1]][-1].price if before else windows[starts[0]][0].price
    rows = []
    for start in range(first, last + 1, interval_s):
        window = windows.get(start)
        if window is None:
            rows.append(OhlcRow(start, close, close, close, close, close, 0.0, 0))
            continue
        volume = sum(t.qty for t in window)
        prices = [t.price for t in window]
        vwap = sum(t.price * t.qty for t in window) / volume
        rows.append(
            OhlcRow(start, prices[0], max(prices), min(prices), prices[-1], vwap, volume, len(window))
        )
        close = prices[-1]
    return rows
