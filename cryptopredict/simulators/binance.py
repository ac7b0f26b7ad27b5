"""The replay exchange speaking Binance spot: trade streams and the public REST market data on one port.

WebSocket: raw streams (`ws://host:port/ws/btcusdt@trade`, several joined by `/`), combined streams
(`/stream?streams=btcusdt@trade/ethusdt@trade`, each event wrapped as `{"stream": ..., "data": ...}`),
and live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS requests on either (`/ws` alone to start empty).
One message per trade, no snapshot; a ping frame about once a second (Binance: every 20 s).
REST (`http://host:port/api/v3/...`): `historicalTrades` by trade id and `klines`, answered from the
trades that have already happened on the replay clock, with the `X-MBX-USED-WEIGHT-1M` header.

Sources, replay clock and faults are the Kraken replay exchange's (simulators.exchange); heartbeats
there are ping frames here, and `BinanceFaults` adds trade ids skipped on the stream and REST bans (418).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from cryptopredict.binance.protocol import BINANCE, to_ms, trade_event
from cryptopredict.binance.rest import (
    KLINE_INTERVALS,
    KLINES_LIMIT,
    TRADES_LIMIT,
    WEIGHT_HEADER,
    historical_trade,
    klines_response,
)
from cryptopredict.kraken.protocol import trade_message as kraken_trade_message
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import (
    HEARTBEAT_S,
    Faults,
    ReplayExchange,
    Session,
    contiguous_candles,
    json_response,
    trade_windows,
)
from cryptopredict.venue_rest import OhlcRow
from cryptopredict.venues import venue_symbol

logger = logging.getLogger(__name__)

MALFORMED_KINDS = (
    "bad_json",
    "missing_field",
    "non_numeric_price",
    "negative_qty",
    "unknown_symbol",
    "future_timestamp",
    "unsubscribed_symbol",
    "other_venue",
)
# Request weights of the endpoints served, as Binance counts them.
WEIGHTS = {"/api/v3/historicalTrades": 25, "/api/v3/klines": 2}
WEIGHT_LIMIT = 6000
INTERVAL_NAMES = {name: seconds for seconds, name in KLINE_INTERVALS.items()}


@dataclass(frozen=True)
class BinanceFaults(Faults):
    """The replay exchange's faults, and two of Binance's own. Trade-message counts are exchange-wide."""

    skip_trade_every: int | None = None  # every Nth trade is left out of the stream (REST still has it)
    rest_418_every: int | None = None  # every Nth REST request: 418 (IP banned) with Retry-After: 1


@dataclass(eq=False)
class StreamSession(Session):
    combined: bool = False  # events wrapped as {"stream", "data"}
    opened: float = field(default_factory=time.monotonic)


def malformed_event(kind: str, trade: Trade) -> dict[str, Any] | str:
    """A trade message broken in one way, built from a real trade (which is also sent intact)."""
    event = trade_event(trade)
    if kind == "bad_json":
        return json.dumps(event)[:30]
    if kind == "missing_field":
        event.pop("p")
    elif kind == "non_numeric_price":
        event["p"] = "abc"
    elif kind == "negative_qty":
        event["q"] = "-" + event["q"]
    elif kind == "unknown_symbol":
        event["s"] = "NOPE"
    elif kind == "future_timestamp":
        event["T"] = to_ms(trade.timestamp + timedelta(days=365))
    elif kind == "unsubscribed_symbol":
        event["s"] = "NOPEUSDT"  # a pair Binance could list, which nobody subscribed on this connection
    elif kind == "other_venue":
        return kraken_trade_message("update", [trade])  # a Kraken message on a Binance connection
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return event


def _framed(event: dict[str, Any] | str, combined: bool) -> str:
    if isinstance(event, str):
        return event
    if combined and isinstance(event.get("s"), str):
        return json.dumps({"stream": f"{event['s'].lower()}@trade", "data": event})
    return json.dumps(event)


class _BadQuery(ValueError):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


@dataclass
class BinanceReplayExchange(ReplayExchange):
    default_pair: ClassVar[str] = "BTC/USDT"
    # Binance closes every connection after 24 hours; a test can make that seconds.
    connection_lifetime_s: float | None = None
    trade_messages: int = 0  # trade messages that happened on the stream (skipped ones included)
    skipped_trade_ids: list[tuple[str, int]] = field(default_factory=list)
    weight_used: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._symbols: dict[str, str] = {}  # BTCUSDT -> BTC/USDT
        self._ids: dict[str, list[int]] = {}
        self._weight_minute = 0

    @property
    def url(self) -> str:
        """The base URL, as settings.binance.ws_url is: the client appends `/ws`."""
        return f"ws://{self.host}:{self.port}"

    def raw_url(self, pairs: list[str]) -> str:
        return f"{self.url}/ws/" + "/".join(f"{venue_symbol(BINANCE, p).lower()}@trade" for p in pairs)

    def combined_url(self, pairs: list[str]) -> str:
        streams = "/".join(f"{venue_symbol(BINANCE, p).lower()}@trade" for p in pairs)
        return f"{self.url}/stream?streams={streams}"

    def _index_pairs(self) -> None:
        super()._index_pairs()
        self._symbols = {venue_symbol(BINANCE, pair): pair for pair in self._by_pair}
        self._ids = {pair: [t.trade_id for t in trades] for pair, trades in self._by_pair.items()}

    # --- stream ------------------------------------------------------------------------------------

    async def _send_update(self, pair: str, trades: list[Trade]) -> None:
        """One message per trade, raw or wrapped per connection, with the skip and malformed faults."""
        f = self.faults
        skip_every = getattr(f, "skip_trade_every", None)
        last_id = self._ids[pair][-1]
        for trade in trades:
            self._pair_sent[pair] += 1
            self.trade_messages += 1
            # Never the pair's last trade: a later trade is what shows the client the jump.
            if skip_every and self.trade_messages % skip_every == 0 and trade.trade_id != last_id:
                self.skipped_trade_ids.append((pair, trade.trade_id))
                continue
            sessions = list(self.subscribers.get(pair, ()))
            if not sessions:
                continue
            event = trade_event(trade)
            messages = {False: "", True: ""}
            for session in sessions:
                combined = isinstance(session, StreamSession) and session.combined
                if not messages[combined]:
                    messages[combined] = _framed(event, combined)
                await self._broadcast([session], messages[combined])
            self.updates_sent += 1
            if f.malformed_every and self.updates_sent % f.malformed_every == 0:
                kind = MALFORMED_KINDS[len(self.malformed_sent) % len(MALFORMED_KINDS)]
                self.malformed_sent.append(kind)
                bad = malformed_event(kind, trade)
                for session in sessions:
                    await self._broadcast([session], _framed(bad, getattr(session, "combined", False)))

    async def _set_status(self, status: str) -> None:
        self.status = status  # Binance has no status channel; REST /sapi/v1/system/status tells

    async def _heartbeat(self) -> None:
        """A ping frame to every live connection, and Binance's closing of old connections."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for session in list(self._sessions):
                await self._ping(session)

    async def _ping(self, session: Session) -> None:
        lifetime = self.connection_lifetime_s
        if isinstance(session, StreamSession) and lifetime and time.monotonic() - session.opened > lifetime:
            logger.info("closing connection %d after %.0fs, as Binance does", session.number, lifetime)
            await session.ws.close(1000, "connection lifetime reached")
            return
        silent = session.silence_after is not None and session.sent >= session.silence_after
        if self.faults.stop_heartbeats or session.dropped or session.silent or silent:
            return
        try:
            await session.ws.ping()
        except websockets.ConnectionClosed:
            self._forget(session)

    def _new_session(self, ws: ServerConnection, number: int) -> Session:
        if ws.keepalive_task is not None:
            ws.keepalive_task.cancel()  # pings are the heartbeat task's, so faults can stop them
        combined = _request_url(ws).path.rstrip("/") == "/stream"
        return StreamSession(ws, number, **self._session_faults(number), combined=combined)

    async def _on_open(self, session: Session) -> None:
        """The streams the URL names are subscribed; Binance sends nothing before a request."""
        url = _request_url(session.ws)
        streams = _url_streams(url.path, url.query)
        self._add_streams(session, [s for s in streams if self._stream_pair(s) is not None])

    def _stream_pair(self, stream: Any) -> str | None:
        if not isinstance(stream, str) or not stream.lower().endswith("@trade"):
            return None
        return self._symbols.get(stream[: -len("@trade")].upper())

    def _add_streams(self, session: Session, streams: list[str]) -> None:
        for stream in streams:
            pair = self._stream_pair(stream)
            assert pair is not None
            session.symbols.add(pair)
            self.subscribers.setdefault(pair, set()).add(session)
        if streams:
            self._started.set()  # the replay clock starts at the first subscription

    async def _on_request(self, session: Session, raw: str | bytes) -> None:
        try:
            request = json.loads(raw)
        except ValueError:
            await session.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}))
            return
        if not isinstance(request, dict):
            await session.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        method, params, req_id = request.get("method"), request.get("params", []), request.get("id")
        if method == "LIST_SUBSCRIPTIONS":
            streams = sorted(f"{venue_symbol(BINANCE, p).lower()}@trade" for p in session.symbols)
            await session.send(json.dumps({"result": streams, "id": req_id}))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            error = {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}
            await session.send(json.dumps({"error": error, "id": req_id}))
            return
        unknown = [s for s in params if self._stream_pair(s) is None]
        refused = [s for s in params if self._stream_pair(s) in self.faults.subscribe_error_pairs]
        if method == "SUBSCRIBE" and (unknown or refused):
            msg = f"Invalid request: unknown stream {unknown[0]!r}" if unknown else f"Refused: {refused[0]}"
            await session.send(json.dumps({"error": {"code": 2, "msg": msg}, "id": req_id}))
            return
        if method == "SUBSCRIBE":
            await session.send(json.dumps({"result": None, "id": req_id}))
            self._add_streams(session, params)
        else:
            for stream in params:
                if (pair := self._stream_pair(stream)) is not None:
                    session.symbols.discard(pair)
                    self.subscribers.get(pair, set()).discard(session)
            await session.send(json.dumps({"result": None, "id": req_id}))

    # --- REST --------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """WebSocket upgrades to a stream path pass through; any other GET is a REST call answered here."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            path = urlsplit(request.path).path.rstrip("/")
            if path == "/stream" or path == "/ws" or path.startswith("/ws/"):
                return None
            return json_response(404, {"code": -1, "msg": f"no stream endpoint {path}"})
        return self._rest(request.path)

    def _rest(self, target: str) -> Response:
        self.rest_requests += 1
        n, f = self.rest_requests, self.faults
        url = urlsplit(target)
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self.weight_used = minute, 0
        self.weight_used += WEIGHTS.get(url.path, 1)
        weight = ((WEIGHT_HEADER, str(self.weight_used)),)
        if f.rest_429_every and n % f.rest_429_every == 0:
            msg = {"code": -1003, "msg": "Too many requests."}
            return json_response(429, msg, (*weight, ("Retry-After", "1")))
        ban_every = getattr(f, "rest_418_every", None)
        if ban_every and n % ban_every == 0:
            msg = {"code": -1003, "msg": "Way too many requests; IP banned."}
            return json_response(418, msg, (*weight, ("Retry-After", "1")))
        if f.rest_500_every and n % f.rest_500_every == 0:
            return json_response(500, {"code": -1000, "msg": "An unknown error occurred."}, weight)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "/api/v3/historicalTrades": self._rest_historical_trades,
            "/api/v3/klines": self._rest_klines,
            "/api/v3/ping": lambda _: {},
            "/api/v3/time": self._rest_time,
            "/sapi/v1/system/status": self._rest_status,
        }
        handler = routes.get(url.path)
        if handler is None:
            return json_response(404, {"code": -1, "msg": f"unknown endpoint {url.path}"}, weight)
        try:
            return json_response(200, handler(query), weight)
        except _BadQuery as exc:
            return json_response(400, {"code": exc.code, "msg": str(exc)}, weight)

    def _rest_time(self, query: dict[str, str]) -> dict[str, Any]:
        """The replay clock's now (the wall clock's before the replay starts): klines close by it."""
        now = self.clock.now() or datetime.now(UTC)
        return {"serverTime": to_ms(now)}

    def _rest_status(self, query: dict[str, str]) -> dict[str, Any]:
        online = self.status == "online"
        return {"status": 0 if online else 1, "msg": "normal" if online else "system maintenance"}

    def _pair(self, query: dict[str, str]) -> str:
        if "symbol" not in query:
            raise _BadQuery(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        pair = self._symbols.get(query["symbol"].upper())
        if pair is None:
            raise _BadQuery(-1121, "Invalid symbol.")
        return pair

    def _rest_historical_trades(self, query: dict[str, str]) -> list[dict[str, Any]]:
        pair = self._pair(query)
        limit = _int(query, "limit", 500)
        if not 1 <= limit <= TRADES_LIMIT:
            raise _BadQuery(
                -1100, f"Illegal characters found in parameter 'limit'; legal range is 1-{TRADES_LIMIT}."
            )
        self._happen_due()
        happened, ids = self._pair_happened[pair], self._ids[pair]
        if "fromId" in query:
            lo = bisect_left(ids, _int(query, "fromId", 0), 0, happened)
        else:  # without fromId: the most recent trades
            lo = max(0, happened - limit)
        return [historical_trade(t) for t in self._by_pair[pair][lo : min(happened, lo + limit)]]

    def _rest_klines(self, query: dict[str, str]) -> list[list[Any]]:
        pair = self._pair(query)
        interval_s = INTERVAL_NAMES.get(query.get("interval", ""))
        if interval_s is None:
            raise _BadQuery(-1120, "Invalid interval.")
        limit = min(KLINES_LIMIT, max(1, _int(query, "limit", 500)))
        start = _int(query, "startTime", -1)
        end = _int(query, "endTime", -1)
        self._happen_due()
        now = self.clock.now()
        trades = self._by_pair[pair][: self._pair_happened[pair]]
        if now is None or not trades:
            return []
        rows = kline_rows(
            trades,
            interval_s,
            int(now.timestamp()),
            None if start < 0 else start,
            None if end < 0 else end,
            limit,
        )
        return klines_response(rows, interval_s)


def _int(query: dict[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _BadQuery(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _request_url(ws: ServerConnection) -> SplitResult:
    return urlsplit(ws.request.path if ws.request is not None else "/ws")


def _url_streams(path: str, query: str) -> list[str]:
    """Stream names a URL subscribes: `/ws/a@trade/b@trade` or `/stream?streams=a@trade/b@trade`."""
    if path.rstrip("/") == "/stream":
        return [s for value in parse_qs(query).get("streams", []) for s in value.split("/") if s]
    return [s for s in path.removeprefix("/ws").split("/") if s]


def kline_rows(
    trades: list[Trade], interval_s: int, now_s: int, start_ms: int | None, end_ms: int | None, limit: int
) -> list[OhlcRow]:
    """Binance's klines of `trades` (time order): every interval from the first trade's up to the one
    containing `now_s` (still forming), empty ones at the previous close with zero volume; the first
    `limit` with open time >= start_ms (or the latest `limit` without), open time <= end_ms."""
    windows = trade_windows(trades, interval_s)
    lo, hi = min(windows), now_s // interval_s * interval_s
    if start_ms is not None:
        lo = max(lo, -(-start_ms // (interval_s * 1000)) * interval_s)
    if end_ms is not None:
        hi = min(hi, end_ms // (interval_s * 1000) * interval_s)
    if start_ms is not None:
        hi = min(hi, lo + (limit - 1) * interval_s)
    else:
        lo = max(lo, hi - (limit - 1) * interval_s)
    return contiguous_candles(windows, interval_s, lo, hi)
