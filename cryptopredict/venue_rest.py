"""What the venues' public REST clients share (cryptopredict/kraken, coinbase, binance rest.py): a GET that
asks politely, the errors, the OHLC row every venue's candles are read into, and small helpers.

A venue's client subclasses `VenueRestClient`, names its error class and says what a final answer is
(`_payload`); a venue with more rules of its own (Binance's request weight and bans) extends `_retry_delay`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx


class VenueRestError(RuntimeError):
    """No usable answer from a venue's REST API; each venue raises its own subclass."""


@dataclass(frozen=True)
class OhlcRow:
    """One candle as the venues' OHLC endpoints give it: `time` is the candle's start in unix seconds."""

    time: int
    open: float
    high: float
    low: float
    close: float
    vwap: float
    volume: float
    count: int


def json_object(body: bytes, error: type[VenueRestError]) -> dict[str, Any]:
    """A response body as the JSON object the venue answers with; anything else is `error`."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError includes bad UTF-8 and huge integers
        raise error(f"response is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise error(f"response is a JSON {type(payload).__name__}, not an object")
    return payload


def shown(value: Any) -> str:
    """A bounded repr of what the server sent, for an error message."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


@dataclass
class VenueRestClient:
    """Asks politely: at most one request per `min_interval_s`, retrying 429 (after its Retry-After when
    sent), 5xx and failed connections with capped exponential delays and jitter."""

    base_url: str
    min_interval_s: float = 1.0
    max_retries: int = 8
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0
    requests: int = 0
    throttled: int = 0
    transport: httpx.AsyncBaseTransport | None = None  # another way to reach the server (tests)

    venue: ClassVar[str]  # names the venue in log lines
    error: ClassVar[type[VenueRestError]]  # raised when the retries are used up
    # The smallest base of the backoff, for a client that sends without a minimum interval.
    backoff_floor_s: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=self.transport
        )
        self._next_request = 0.0  # monotonic time before which no request goes out
        self._log = logging.getLogger(type(self).__module__)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        """The venue's answer to GET `path` (see `_payload`), after the retries `_retry_delay` asks for."""
        for attempt in range(self.max_retries + 1):
            wait = self._next_request - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_request = time.monotonic() + self.min_interval_s
            self.requests += 1
            try:
                response = await self._client.get(path, params=params)
            except httpx.TransportError as exc:
                delay = self._backoff(attempt)
                self._log.warning("%s REST %s failed (%s); retrying in %.1fs", self.venue, path, exc, delay)
                await asyncio.sleep(delay)
                continue
            retry_in = self._retry_delay(response, attempt)
            if retry_in is None:
                return self._payload(path, response)
            status = response.status_code
            self._log.warning("%s REST %s answered %d; retrying in %.1fs", self.venue, path, status, retry_in)
            await asyncio.sleep(retry_in)
        raise self.error(f"{path} failed after {self.max_retries + 1} attempts")

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before asking again (429 and 5xx), or None when the response is the answer."""
        if response.status_code != 429 and response.status_code < 500:
            return None
        self.throttled += response.status_code == 429
        return retry_after(response) or self._backoff(attempt)

    def _payload(self, path: str, response: httpx.Response) -> Any:
        """What a response that is not retried answers, or the venue's error."""
        raise NotImplementedError

    def _backoff(self, attempt: int) -> float:
        base = max(self.min_interval_s, self.backoff_floor_s)
        return float(min(self.max_backoff_s, base * 2**attempt) * random.uniform(0.5, 1.0))
