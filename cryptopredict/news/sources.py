"""News sources: CryptoPanic's posts API and RSS/Atom feeds, normalised to NewsItem.

A source never raises for one bad item or one unreadable page: those come back in
`FetchResult.rejected` as `(raw, reason)` so the caller can keep them as dead letters while the rest of
the batch goes through. Transport trouble is different: it raises `NewsSourceError`, whose `transient`
flag tells the caller (a Temporal activity) whether a retry can help.

Ids are stable across polls, so storing the same headline twice is a no-op downstream:
`"<source>:<id the source gives>"` (CryptoPanic post id, RSS guid, Atom id), or, when the source gives
none, `"url:" + sha256(canonical URL)`.

Feeds are untrusted XML parsed with the standard library (defusedxml is not available), so any document
with a DTD is refused before ElementTree sees it: that is where entity-expansion bombs live, and real
news feeds do not need one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from xml.parsers import expat

import httpx
from pydantic import SecretStr, ValidationError

from cryptopredict.models import NewsItem

logger = logging.getLogger(__name__)

# Defaults only: the feeds the product polls in production. Tests and the demo use the local server.
DEFAULT_RSS_FEEDS: tuple[str, ...] = (
    "https://www.coindesk.com/arc/outboundfeeds/rss/",
    "https://cointelegraph.com/rss",
    "https://decrypt.co/feed",
)
CRYPTOPANIC_V2_URL = "https://cryptopanic.com/api/developer/v2/posts/"

TITLE_MAX = 500
SUMMARY_MAX = 2_000
URL_MAX = 2_048
# A dead letter keeps this much of the rejected input: enough to diagnose, bounded for the table.
RAW_MAX = 10_000
# Clocks and feed time zones are sloppy; further ahead than this is a wrong date, not early news.
FUTURE_SLACK = timedelta(days=1)
USER_AGENT = "cryptopredict-news/1.0"

_TICKER = re.compile(r"^[A-Z0-9]{2,10}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_URL_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DTD_BYTES = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SECRET_PARAMS = frozenset({"auth_token"})

_ATOM = "{http://www.w3.org/2005/Atom}"
_CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
_DC = "{http://purl.org/dc/elements/1.1/}"


class NewsSourceError(RuntimeError):
    """A fetch that failed as a whole. `transient` says whether retrying later can help (5xx, 429 past
    its retries, timeouts, refused connections) or not (bad token, unknown path, oversized body)."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class FetchResult:
    items: list[NewsItem] = field(default_factory=list)
    # (raw input, reason) for each item or page that could not be used; raw is cut to RAW_MAX.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # The first request answered 304: nothing changed since the validators in the cache were stored.
    not_modified: bool = False
    pages: int = 0
    # Items dropped because an earlier page of the same fetch already had their id.
    duplicates: int = 0


@dataclass(frozen=True)
class FetchPolicy:
    """Timeouts and the 429 budget. The wait for one 429 is capped so a hostile or confused server
    cannot park an activity for an hour; after `max_retries` the error is transient and Temporal's
    own backoff takes over."""

    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(15.0, connect=5.0))
    max_retries: int = 3
    max_wait_s: float = 30.0
    # Used when a 429 carries no usable Retry-After; doubled per attempt, still capped by max_wait_s.
    default_wait_s: float = 1.0
    max_body_bytes: int = 5_000_000


class ConditionalCache:
    """ETag / Last-Modified per URL. Validators are only useful across polls, so a caller that rebuilds
    its sources each run keeps one cache and passes it to every source it builds."""

    def __init__(self) -> None:
        self._validators: dict[str, tuple[str | None, str | None]] = {}

    def request_headers(self, url: str) -> dict[str, str]:
        etag, last_modified = self._validators.get(_redact(url), (None, None))
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return headers

    def remember(self, url: str, headers: httpx.Headers) -> None:
        etag, last_modified = headers.get("ETag"), headers.get("Last-Modified")
        if etag or last_modified:
            self._validators[_redact(url)] = (etag, last_modified)

    def __len__(self) -> int:
        return len(self._validators)


class NewsSource(Protocol):
    name: str

    async def fetch(self, client: httpx.AsyncClient) -> FetchResult: ...


# --- text, URLs, ids, dates -------------------------------------------------------------------------


class _Rejected(ValueError):
    """One item that cannot become a NewsItem; the message is the dead-letter reason."""


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 header "
    "hr li main nav ol p pre section table td th tr ul".split()
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def clean_text(text: str, limit: int) -> str:
    """Plain text of a title or summary: feeds put HTML (and entities) in both, and the LLM and the
    store want one line of bounded text. Cut at a word boundary when one is near the limit."""
    extractor = _TextExtractor()
    extractor.feed(text)
    extractor.close()
    plain = " ".join(_CONTROL.sub("", "".join(extractor.parts)).split())
    if len(plain) <= limit:
        return plain
    cut = plain[: limit - 1]
    head, _, _ = cut.rpartition(" ")
    if len(head) >= limit - 50:
        cut = head
    return cut.rstrip() + "…"


def canonical_url(url: str) -> str:
    """The form two links to the same article share: lowercase scheme and host, no default port, no
    user info, no fragment, no utm_* tracking parameters, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not k.lower().startswith("utm_")
        ]
    )
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), query, ""))


def stable_id(source: str, source_id: str | None, url: str) -> str:
    if source_id is not None and source_id.strip():
        return f"{source}:{source_id.strip()}"
    return "url:" + hashlib.sha256(canonical_url(url).encode()).hexdigest()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None when absent or
    unreadable, so the caller falls back to its own backoff."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _iso_datetime(value: object) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise _Rejected("missing published date")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise _Rejected(f"unreadable date {value[:60]!r}") from exc
    # A date without an offset is taken as UTC: every source here publishes UTC when it omits it.
    return _utc(parsed, value)


def _utc(parsed: datetime, value: str) -> datetime:
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 pushed out of range by its offset
        raise _Rejected(f"date out of range {value[:60]!r}") from exc


def _rfc822_datetime(value: str | None) -> datetime:
    if value is None or not value.strip():
        raise _Rejected("missing published date")
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year of many digits
        # Some RSS feeds write ISO 8601 in pubDate.
        return _iso_datetime(value)
    return _utc(parsed, value)


def _checked_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Rejected("missing url")
    url = value.strip()
    if len(url) > URL_MAX:
        raise _Rejected(f"url longer than {URL_MAX} characters")
    # urlsplit drops tabs and newlines inside a URL (as browsers do), so "http:/<tab>/host" would pass
    # the checks below while the stored link keeps them.
    if _URL_CONTROL.search(url):
        raise _Rejected(f"url contains control characters {url[:100]!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise _Rejected(f"invalid url {url[:100]!r}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Rejected(f"url is not http(s) {url[:100]!r}")
    return url


def _tickers(entries: object) -> list[str]:
    """Upper-case tickers; anything that does not look like one is dropped, not a reason to reject."""
    codes: list[str] = []
    if not isinstance(entries, list):
        return codes
    for entry in entries:
        code = entry.get("code") if isinstance(entry, dict) else entry
        ticker = code.strip().upper() if isinstance(code, str) else ""
        if _TICKER.match(ticker) and ticker not in codes:
            codes.append(ticker)
    return codes


def _make_item(
    *,
    source: str,
    source_id: str | None,
    title: object,
    summary: object,
    url: object,
    published_at: datetime,
    ingested_at: datetime,
    currencies: list[str],
) -> NewsItem:
    if not isinstance(title, str):
        raise _Rejected("missing title")
    clean_title = clean_text(title, TITLE_MAX)
    if not clean_title:
        raise _Rejected("empty title")
    link = _checked_url(url)
    if published_at > ingested_at + FUTURE_SLACK:
        raise _Rejected(f"published_at {published_at.isoformat()} is in the future")
    try:
        return NewsItem(
            id=stable_id(source, source_id, link),
            title=clean_title,
            summary=clean_text(summary, SUMMARY_MAX) if isinstance(summary, str) else "",
            url=link,
            source=source,
            published_at=published_at,
            ingested_at=ingested_at,
            currencies=currencies,
        )
    except ValidationError as exc:
        raise _Rejected(f"invalid item: {exc.errors()[0]['msg']}") from exc


def _raw_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:RAW_MAX]


def _raw_body(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return text[:RAW_MAX]


def _dedupe(items: Iterable[NewsItem]) -> tuple[list[NewsItem], int]:
    unique: dict[str, NewsItem] = {}
    duplicates = 0
    for item in items:
        if item.id in unique:
            duplicates += 1
        else:
            unique[item.id] = item
    return list(unique.values()), duplicates


# --- CryptoPanic ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CryptoPanicPage:
    items: list[NewsItem]
    rejected: list[tuple[str, str]]
    next_url: str | None


def _cryptopanic_item(raw: object, *, source: str, ingested_at: datetime, link_base: str) -> NewsItem:
    if not isinstance(raw, dict):
        raise _Rejected("item is not an object")
    post_id = raw.get("id")
    if isinstance(post_id, bool) or not isinstance(post_id, int | str) or not str(post_id).strip():
        raise _Rejected("missing id")
    # v1 links to CryptoPanic's page in `url`; v2 may give the publisher's `original_url`, or neither
    # (free plans), and then the post's page is built from its slug.
    url = next(
        (raw[k] for k in ("original_url", "url") if isinstance(raw.get(k), str) and raw[k].strip()), None
    )
    if url is None:
        slug = raw.get("slug")
        tail = f"{slug.strip()}/" if isinstance(slug, str) and slug.strip() else ""
        url = f"{link_base.rstrip('/')}/news/{str(post_id).strip()}/{tail}"
    # v1 says `currencies`, v2 says `instruments`; both are lists of {"code": ...}.
    codes = _tickers(raw.get("currencies"))
    codes += [code for code in _tickers(raw.get("instruments")) if code not in codes]
    summary = raw.get("description")
    metadata = raw.get("metadata")
    if not isinstance(summary, str) and isinstance(metadata, dict):
        summary = metadata.get("description")
    return _make_item(
        source=source,
        source_id=str(post_id),
        title=raw.get("title"),
        summary=summary,
        url=url,
        published_at=_iso_datetime(raw.get("published_at") or raw.get("created_at")),
        ingested_at=ingested_at,
        currencies=codes,
    )


def parse_cryptopanic(
    body: bytes | str,
    *,
    ingested_at: datetime,
    source: str = "cryptopanic",
    link_base: str = "https://cryptopanic.com",
) -> CryptoPanicPage:
    """One page of the posts API in either shape (v1 `/api/v1/posts/` or developer v2)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError includes UnicodeDecodeError
        return CryptoPanicPage([], [(_raw_body(body), f"malformed JSON page: {exc}")], None)
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        return CryptoPanicPage([], [(_raw_body(body), "page has no results list")], None)
    items: list[NewsItem] = []
    rejected: list[tuple[str, str]] = []
    for raw in results:
        try:
            items.append(_cryptopanic_item(raw, source=source, ingested_at=ingested_at, link_base=link_base))
        except _Rejected as exc:
            rejected.append((_raw_json(raw), str(exc)))
    next_url = payload.get("next")
    return CryptoPanicPage(
        items, rejected, next_url if isinstance(next_url, str) and next_url.strip() else None
    )


# --- RSS 2.0 and Atom -------------------------------------------------------------------------------


class _DtdFound(Exception):
    pass


def _refuse_dtd(*_args: object) -> None:
    raise _DtdFound


def _has_dtd(body: bytes) -> bool:
    """A DTD anywhere in the document, whatever its encoding: the byte scan catches the usual case, an
    expat pass with declaration handlers catches the rest (UTF-16, single-byte code pages), and stops
    at the declaration, before any entity is expanded."""
    if _DTD_BYTES.search(body):
        return True
    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = _refuse_dtd
    scanner.EntityDeclHandler = _refuse_dtd
    try:
        scanner.Parse(body, True)
    except _DtdFound:
        return True
    except expat.ExpatError:
        return False  # ElementTree reports the syntax error with its own message
    return False


def _text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    text = "".join(element.itertext()).strip()
    return text or None


def _rss_item(element: ET.Element, *, source: str, ingested_at: datetime) -> NewsItem:
    guid = _text(element.find("guid"))
    link = _text(element.find("link"))
    if link is None and guid is not None and guid.startswith(("http://", "https://")):
        guid_element = element.find("guid")
        if guid_element is not None and guid_element.get("isPermaLink", "true").lower() != "false":
            link = guid
    return _make_item(
        source=source,
        source_id=guid,
        title=_text(element.find("title")),
        summary=_text(element.find("description")) or _text(element.find(f"{_CONTENT}encoded")),
        url=link,
        published_at=_rfc822_datetime(_text(element.find("pubDate")) or _text(element.find(f"{_DC}date"))),
        ingested_at=ingested_at,
        currencies=[],
    )


def _atom_link(entry: ET.Element) -> str | None:
    links = entry.findall(f"{_ATOM}link")
    for link in links:
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return link.get("href")
    return next((link.get("href") for link in links if link.get("href")), None)


def _atom_entry(element: ET.Element, *, source: str, ingested_at: datetime) -> NewsItem:
    return _make_item(
        source=source,
        source_id=_text(element.find(f"{_ATOM}id")),
        title=_text(element.find(f"{_ATOM}title")),
        summary=_text(element.find(f"{_ATOM}summary")) or _text(element.find(f"{_ATOM}content")),
        url=_atom_link(element),
        published_at=_iso_datetime(
            _text(element.find(f"{_ATOM}published")) or _text(element.find(f"{_ATOM}updated"))
        ),
        ingested_at=ingested_at,
        currencies=[],
    )


def parse_feed(
    body: bytes | str, *, source: str, ingested_at: datetime
) -> tuple[list[NewsItem], list[tuple[str, str]]]:
    """Items and rejects of an RSS 2.0 or Atom document; a document that cannot be read at all is one
    rejected entry with the reason."""
    data = body.encode() if isinstance(body, str) else body
    try:
        if _has_dtd(data):
            return [], [(_raw_body(data), "feed declares a DTD (<!DOCTYPE/<!ENTITY): refused")]
        root = ET.fromstring(data)
    # The XML declaration names an encoding Python does not know (LookupError) or expat cannot read
    # (ValueError: multi-byte code pages).
    except (LookupError, ValueError) as exc:
        return [], [(_raw_body(data), f"unreadable XML feed: {exc}")]
    except ET.ParseError as exc:
        return [], [(_raw_body(data), f"malformed XML feed: {exc}")]
    if root.tag == "rss":
        channel = root.find("channel")
        elements = channel.findall("item") if channel is not None else []
        build = _rss_item
    elif root.tag == f"{_ATOM}feed":
        elements = root.findall(f"{_ATOM}entry")
        build = _atom_entry
    else:
        return [], [(_raw_body(data), f"unsupported feed root <{root.tag}>")]
    items: list[NewsItem] = []
    rejected: list[tuple[str, str]] = []
    for element in elements:
        try:
            items.append(build(element, source=source, ingested_at=ingested_at))
        except _Rejected as exc:
            rejected.append((ET.tostring(element, encoding="unicode")[:RAW_MAX], str(exc)))
    return items, rejected


# --- HTTP -------------------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """The URL with secrets masked: used in messages, logs and as the cache key, never the token."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = urlencode(
        [(k, "***" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*,",
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _with_params(url: str, params: dict[str, str]) -> str:
    return str(httpx.URL(url).copy_merge_params(params))


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise NewsSourceError(
                f"{_redact(str(response.url))}: body larger than {limit} bytes", transient=False
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def http_get(
    client: httpx.AsyncClient,
    url: str,
    *,
    policy: FetchPolicy,
    cache: ConditionalCache,
    accept: str,
    secrets: Sequence[str] = (),
) -> bytes | None:
    """The body of a 2xx answer, or None for 304. Waits out 429s within the policy; everything else
    that is not a success raises NewsSourceError with the transient flag set for the caller's retry."""
    shown = _redact(url)

    def scrub(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    for attempt in range(policy.max_retries + 1):
        headers = {"Accept": accept, "User-Agent": USER_AGENT, **cache.request_headers(url)}
        wait = 0.0
        try:
            async with client.stream(
                "GET", url, headers=headers, timeout=policy.timeout, follow_redirects=True
            ) as response:
                status = response.status_code
                if status == 304:
                    return None
                if 200 <= status < 300:
                    body = await _read_limited(response, policy.max_body_bytes)
                    cache.remember(url, response.headers)
                    return body
                if status == 429:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    fallback = policy.default_wait_s * 2**attempt
                    wait = min(policy.max_wait_s, fallback if retry_after is None else retry_after)
                else:
                    snippet = (await response.aread())[:200].decode("utf-8", errors="replace")
                    raise NewsSourceError(
                        scrub(f"{shown}: HTTP {status} {response.reason_phrase}: {snippet}"),
                        transient=status >= 500,
                        status=status,
                    )
        except httpx.TransportError as exc:
            raise NewsSourceError(scrub(f"{shown}: {type(exc).__name__}: {exc}"), transient=True) from exc
        if attempt < policy.max_retries:
            logger.info("%s: 429, retrying in %.1f s (attempt %d)", shown, wait, attempt + 1)
            await asyncio.sleep(wait)
    raise NewsSourceError(
        f"{shown}: still rate limited (429) after {policy.max_retries} retries", transient=True, status=429
    )


# --- sources ----------------------------------------------------------------------------------------


class CryptoPanicSource:
    """The posts API. The token is required and stays a SecretStr: it is sent as the `auth_token`
    query parameter and masked in every message. `next` links are followed only on the API's own
    origin, so a tampered page cannot send the token elsewhere."""

    def __init__(
        self,
        url: str,
        auth_token: SecretStr,
        *,
        currencies: Iterable[str] = (),
        public: bool = True,
        max_pages: int = 3,
        name: str = "cryptopanic",
        policy: FetchPolicy | None = None,
        cache: ConditionalCache | None = None,
    ) -> None:
        if not isinstance(auth_token, SecretStr) or not auth_token.get_secret_value():
            raise ValueError("CryptoPanic needs a non-empty auth_token (SecretStr)")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self.url = url
        self.name = name
        self.currencies = [c.strip().upper() for c in currencies if c.strip()]
        self.public = public
        self.max_pages = max_pages
        self.policy = policy or FetchPolicy()
        self.cache = cache if cache is not None else ConditionalCache()
        self._token = auth_token

    def __repr__(self) -> str:
        return f"CryptoPanicSource({_redact(self.url)!r}, currencies={self.currencies})"

    def _first_url(self) -> str:
        params = {"auth_token": self._token.get_secret_value()}
        if self.public:
            params["public"] = "true"
        if self.currencies:
            params["currencies"] = ",".join(self.currencies)
        return _with_params(self.url, params)

    async def fetch(self, client: httpx.AsyncClient) -> FetchResult:
        ingested_at = datetime.now(UTC)
        origin = _origin(self.url)
        scheme, host, port = origin
        link_base = f"{scheme}://{host}" + (f":{port}" if port else "")
        token = self._token.get_secret_value()
        url: str | None = self._first_url()
        items: list[NewsItem] = []
        rejected: list[tuple[str, str]] = []
        visited: set[str] = set()
        pages = 0
        not_modified = False
        while url is not None and pages < self.max_pages:
            visited.add(url)
            body = await http_get(
                client, url, policy=self.policy, cache=self.cache, accept="application/json", secrets=[token]
            )
            pages += 1
            if body is None:
                not_modified = pages == 1
                break
            page = parse_cryptopanic(body, ingested_at=ingested_at, source=self.name, link_base=link_base)
            items += page.items
            rejected += [(raw.replace(token, "***"), reason) for raw, reason in page.rejected]
            url = None
            if page.next_url is not None:
                candidate = urljoin(self.url, page.next_url)
                if _origin(candidate) != origin:
                    rejected.append((_redact(candidate), "next link leaves the API origin: not followed"))
                else:
                    candidate = _with_params(candidate, {"auth_token": token})
                    if candidate in visited:
                        rejected.append((_redact(candidate), "next link points at a page already read"))
                    else:
                        url = candidate
        unique, duplicates = _dedupe(items)
        logger.info(
            "%s: %d items, %d rejected, %d duplicates, %d pages%s",
            self.name,
            len(unique),
            len(rejected),
            duplicates,
            pages,
            " (not modified)" if not_modified else "",
        )
        return FetchResult(unique, rejected, not_modified, pages, duplicates)


def _feed_name(url: str) -> str:
    host = (urlsplit(url).hostname or "feed").lower()
    return host.removeprefix("www.")


class RssSource:
    """One RSS 2.0 or Atom feed. `name` (default: the feed's host without `www.`) prefixes the ids,
    so it must stay the same between polls for ids to be stable."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        policy: FetchPolicy | None = None,
        cache: ConditionalCache | None = None,
    ) -> None:
        self.url = url
        self.name = name or _feed_name(url)
        self.policy = policy or FetchPolicy()
        self.cache = cache if cache is not None else ConditionalCache()

    def __repr__(self) -> str:
        return f"RssSource({self.url!r}, name={self.name!r})"

    async def fetch(self, client: httpx.AsyncClient) -> FetchResult:
        ingested_at = datetime.now(UTC)
        body = await http_get(
            client,
            self.url,
            policy=self.policy,
            cache=self.cache,
            accept="application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
        )
        if body is None:
            return FetchResult(not_modified=True, pages=1)
        items, rejected = parse_feed(body, source=self.name, ingested_at=ingested_at)
        unique, duplicates = _dedupe(items)
        logger.info(
            "%s: %d items, %d rejected, %d duplicates", self.name, len(unique), len(rejected), duplicates
        )
        return FetchResult(unique, rejected, False, 1, duplicates)
