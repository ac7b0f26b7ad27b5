"""Hypothesis properties beside the atheris targets: structured inputs (JSON of the right shape with
wrong values, feeds built element by element, requests field by field) reach deeper than random bytes.
Each property runs the same invariant as its atheris target (invariants.py, grpc_invariants.py), and the
round-trip properties check that what the project's own producers write parses back unchanged."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc_invariants
import invariants
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptopredict.kraken.protocol import trade_message
from cryptopredict.kraken.rest import parse_trades_response, trades_response
from cryptopredict.models import Trade
from cryptopredict.news.sources import parse_cryptopanic, parse_feed

pytestmark = pytest.mark.unit

# Sized so that the whole fuzz tier stays within seconds; `make fuzz` is the long run. No example
# database: it would be a directory in the repository's top level.
PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["BTC/USD", "buy", "sell", "limit", "market", "2026-01-01T00:00:00Z", "1e999", ""])
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ROW_FIELDS = ("symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp")
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(2025, 12, 31), timezones=st.just(UTC))
RECENT = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
PRICES = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False).filter(
    lambda x: x > 0
)


@st.composite
def trade_lists(
    draw: st.DrawFn, pair: str | None = None, moments: st.SearchStrategy[datetime] = MOMENTS
) -> list[Trade]:
    ids = sorted(draw(st.sets(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=5)))
    return [
        Trade(
            pair=pair or draw(st.sampled_from(invariants.PAIRS)),
            trade_id=trade_id,
            price=draw(PRICES),
            qty=draw(PRICES),
            side=draw(st.sampled_from(["buy", "sell"])),
            ord_type=draw(st.sampled_from(["market", "limit"])),
            timestamp=draw(moments),
            ingested_at=invariants.NOW,
        )
        for trade_id in ids
    ]


def _without_ingested_at(trades: list[Trade]) -> list[dict[str, Any]]:
    return [trade.model_dump(exclude={"ingested_at"}) for trade in trades]


# --- Kraken WebSocket v2 ----------------------------------------------------------------------------


@PROPERTY
@given(trade_lists(), st.sampled_from(["snapshot", "update"]))
def test_streamed_trades_come_out_of_the_feed_unchanged(trades: list[Trade], kind: str) -> None:
    events = invariants.exchange_message(trade_message(kind, trades).encode())
    assert all(isinstance(event, Trade) for event in events), events
    assert _without_ingested_at(events) == _without_ingested_at(trades)  # type: ignore[arg-type]


@PROPERTY
@given(
    st.sampled_from(["snapshot", "update", "bogus", None]),
    st.lists(st.dictionaries(st.sampled_from(ROW_FIELDS), JSON) | JSON, max_size=4),
)
def test_trade_messages_with_any_rows_give_trades_or_dead_letters(kind: Any, rows: list[Any]) -> None:
    message = {"channel": "trade", "type": kind, "data": rows}
    invariants.exchange_message(json.dumps(message).encode())
    invariants.trade_rows(message)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["channel", "method", "type", "data", "result", "symbol", "success", "error"]), JSON
    )
)
def test_any_exchange_message_gives_trades_or_dead_letters(message: dict[str, Any]) -> None:
    invariants.exchange_message(json.dumps(message).encode())


# --- Kraken REST ------------------------------------------------------------------------------------


@PROPERTY
@given(trade_lists(pair="BTC/USD", moments=RECENT), st.integers(min_value=0, max_value=2**63 - 1))
def test_rest_trades_page_round_trips(trades: list[Trade], last: int) -> None:
    # Exact only where a float of seconds resolves microseconds (invariants._same_rest_trade).
    parsed, parsed_last = parse_trades_response(
        trades_response("XXBTZUSD", trades, last), "BTC/USD", invariants.NOW
    )
    assert parsed == trades and parsed_last == last


@PROPERTY
@given(
    JSON,
    st.lists(st.lists(SCALARS, min_size=6, max_size=8) | JSON, max_size=4),
    SCALARS,
)
def test_any_rest_page_gives_trades_or_a_rest_error(error: Any, rows: list[Any], last: Any) -> None:
    invariants.rest_payload({"error": error, "result": {"XXBTZUSD": rows, "last": last}})
    invariants.rest_payload({"error": [], "result": {"XXBTZUSD": rows, "last": last}})


# --- news -------------------------------------------------------------------------------------------

NEWS_TEXT = st.text(max_size=40) | st.sampled_from(
    ["https://coindesk.example/a", "javascript:alert(1)", "2025-01-06T12:00:00+02:00", "<b>x</b> &amp;", " "]
)
POST_FIELDS = ("id", "title", "url", "original_url", "slug", "published_at", "created_at", "description")


@PROPERTY
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                **{name: NEWS_TEXT | JSON for name in POST_FIELDS},
                "currencies": st.lists(st.fixed_dictionaries({"code": NEWS_TEXT | JSON}) | JSON, max_size=3),
                "instruments": JSON,
                "metadata": JSON,
            },
        )
        | JSON,
        max_size=4,
    ),
    JSON,
)
def test_any_cryptopanic_page_gives_items_or_dead_letters(results: list[Any], next_url: Any) -> None:
    invariants.cryptopanic_page(json.dumps({"results": results, "next": next_url}).encode())


@PROPERTY
@given(
    st.sampled_from([1, "501"]),
    st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=30),
    MOMENTS.filter(lambda moment: moment.year > 1),
)
def test_a_valid_post_keeps_its_id_title_and_date(post_id: Any, title: str, published: datetime) -> None:
    post = {
        "id": post_id,
        "title": title,
        "url": "https://cryptopanic.com/news/1/x",
        "published_at": published.isoformat(),
    }
    [item] = parse_cryptopanic(json.dumps({"results": [post]}), ingested_at=invariants.NOW).items
    assert (item.id, item.title, item.published_at) == (f"cryptopanic:{post_id}", title, published)


def _element(parent: ET.Element, tag: str, text: str | None, **attributes: str) -> None:
    if text is not None:
        ET.SubElement(parent, tag, attributes).text = text


XML_TEXT = st.none() | NEWS_TEXT.map(lambda text: "".join(c for c in text if c.isprintable() or c in "\t\n"))
DATES = XML_TEXT | st.sampled_from(["Mon, 06 Jan 2025 12:00:00 GMT", "Fri, 31 Dec 9999 23:00:00 -0500"])


@PROPERTY
@given(st.lists(st.tuples(XML_TEXT, XML_TEXT, XML_TEXT, DATES, XML_TEXT), max_size=4), st.booleans())
def test_any_rss_or_atom_feed_gives_items_or_dead_letters(
    entries: list[tuple[str | None, ...]], atom: bool
) -> None:
    ns = "{http://www.w3.org/2005/Atom}" if atom else ""
    root = ET.Element(f"{ns}feed") if atom else ET.Element("rss")
    parent = root if atom else ET.SubElement(root, "channel")
    for title, link, guid, date, summary in entries:
        entry = ET.SubElement(parent, f"{ns}entry" if atom else "item")
        _element(entry, f"{ns}title", title)
        if atom and link is not None:
            ET.SubElement(entry, f"{ns}link", {"href": link})
        else:
            _element(entry, "link", link)
        _element(entry, f"{ns}id" if atom else "guid", guid)
        _element(entry, f"{ns}published" if atom else "pubDate", date)
        _element(entry, f"{ns}summary" if atom else "description", summary)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    invariants.news_feed(body)
    items, rejected = parse_feed(body, source="feed", ingested_at=invariants.NOW)
    assert len(items) + len(rejected) == len(entries)


# --- gRPC requests ----------------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SERVED_INTERVALS = st.sampled_from([60, 300]) | INT64
PAIR_TEXT = st.sampled_from([*invariants.PAIRS, "btc/usd", "DOGE/USD", ""]) | st.text(max_size=200)
TARGET_TEXT = st.sampled_from(["", "price", "volatility"]) | st.text(max_size=200)
EXCHANGE_TEXT = st.sampled_from(["", "kraken", "coinbase", "binance", "*"]) | st.text(max_size=200)
LEVELS = st.lists(st.sampled_from([0.1, 0.5, 0.9]) | st.floats(), max_size=30)


@st.composite
def grpc_calls(draw: st.DrawFn) -> tuple[str, Any]:
    pb = grpc_invariants.pb
    method = draw(st.sampled_from(grpc_invariants.METHODS))
    interval, horizon = draw(SERVED_INTERVALS), draw(st.sampled_from([0, 60, 300]) | INT64)
    if method == "StreamPredictions":
        pairs = draw(st.lists(PAIR_TEXT, max_size=30))
        return method, pb.StreamPredictionsRequest(
            pairs=pairs,
            interval_s=interval,
            horizon_s=horizon,
            target=draw(TARGET_TEXT),
            exchange=draw(EXCHANGE_TEXT),
        )
    if method == "GetLatestPrediction":
        request = pb.GetLatestPredictionRequest(
            pair=draw(PAIR_TEXT),
            interval_s=interval,
            horizon_s=horizon,
            quantile_levels=draw(LEVELS),
            target=draw(TARGET_TEXT),
            exchange=draw(EXCHANGE_TEXT),
        )
        return method, request
    if method == "GetLedger":
        request = pb.GetLedgerRequest(
            pair=draw(PAIR_TEXT),
            interval_s=interval,
            model_version=draw(st.text(max_size=20)),
            exchange=draw(EXCHANGE_TEXT),
        )
        if draw(st.booleans()):
            request.since.seconds, request.since.nanos = draw(INT64), draw(st.integers(-(2**31), 2**31 - 1))
        return method, request
    if method == "ListModels":
        pairs = draw(st.lists(PAIR_TEXT, max_size=30))
        return method, pb.ListModelsRequest(pairs=pairs, exchange=draw(EXCHANGE_TEXT))
    return method, pb.GetModelRequest(
        pair=draw(PAIR_TEXT),
        interval_s=interval,
        horizon_s=horizon,
        target=draw(TARGET_TEXT),
        exchange=draw(EXCHANGE_TEXT),
    )


@PROPERTY
@given(grpc_calls())
def test_any_request_is_answered_or_refused_with_a_client_error(call: tuple[str, Any]) -> None:
    method, request = call
    grpc_invariants.call_grpc(method, request)


@PROPERTY
@given(
    st.sampled_from(invariants.PAIRS),
    st.sampled_from([(60, 60), (60, 300), (300, 300)]),
    st.lists(st.sampled_from([0.1, 0.5, 0.9]), max_size=3),
    st.sampled_from(["", "kraken", "coinbase"]),
)
def test_a_request_for_what_is_served_is_never_invalid(
    pair: str, interval_horizon: tuple[int, int], levels: list[float], exchange: str
) -> None:
    interval, horizon = interval_horizon
    pb = grpc_invariants.pb
    key = {"pair": pair, "interval_s": interval, "exchange": exchange}
    for method, request in [
        (
            "GetLatestPrediction",
            pb.GetLatestPredictionRequest(**key, horizon_s=horizon, quantile_levels=levels),
        ),
        ("GetModel", pb.GetModelRequest(**key, horizon_s=horizon)),
        ("GetLedger", pb.GetLedgerRequest(**key)),
        (
            "StreamPredictions",
            pb.StreamPredictionsRequest(
                pairs=[pair], interval_s=interval, horizon_s=horizon, exchange=exchange
            ),
        ),
        ("StreamPredictions", pb.StreamPredictionsRequest(pairs=[pair], interval_s=interval, exchange="*")),
        ("ListModels", pb.ListModelsRequest(pairs=[pair], exchange=exchange)),
    ]:
        aborted = grpc_invariants.call_grpc(method, request)
        assert aborted is None or aborted.code != grpc.StatusCode.INVALID_ARGUMENT, (method, aborted.details)
