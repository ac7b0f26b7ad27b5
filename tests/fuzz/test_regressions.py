"""Every input the fuzzers (or a review of their targets) found crashing a parser, fed to it again: the
parser now answers with a rejection and its reason, and every seed and regression input of each corpus
still satisfies its target's invariant (see invariants.py). A new crash goes into corpus/<target>/ as
regression-<what> and gets a row in REGRESSIONS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc_invariants
import invariants
import pytest

from cryptopredict.feed_client import Rejected
from cryptopredict.kraken.rest import KrakenRestError, decode_payload, parse_trades_response
from cryptopredict.news.sources import parse_cryptopanic, parse_feed

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent / "corpus"
CHECKS: dict[str, Callable[[bytes], object]] = {
    "kraken_ws": invariants.exchange_message,
    "kraken_rest": invariants.rest_page,
    "news_cryptopanic": invariants.cryptopanic_page,
    "news_feed": invariants.news_feed,
    "grpc_requests": grpc_invariants.grpc_request,
}


def _reasons(target: str, data: bytes) -> list[str]:
    """Why the parser refused (parts of) the input; empty when it took all of it."""
    if target == "kraken_ws":
        return [event.reason for event in invariants.exchange_message(data) if isinstance(event, Rejected)]
    if target == "kraken_rest":
        try:
            parse_trades_response(decode_payload(data), "BTC/USD", invariants.NOW)
        except KrakenRestError as exc:
            return [str(exc)]
        return []
    if target == "news_cryptopanic":
        return [reason for _raw, reason in parse_cryptopanic(data, ingested_at=invariants.NOW).rejected]
    if target == "news_feed":
        return [reason for _raw, reason in parse_feed(data, source="feed", ingested_at=invariants.NOW)[1]]
    method = grpc_invariants.METHODS[data[0] % len(grpc_invariants.METHODS)]
    request = getattr(grpc_invariants.pb, f"{method}Request").FromString(data[1:])
    aborted = grpc_invariants.call_grpc(method, request)
    return [] if aborted is None else [f"{aborted.code.name}: {aborted.details}"]


# (target, input file, what the one reason says; "" when the input is now accepted whole).
REGRESSIONS = [
    # format_timestamp wrote year 102 as "102-...", which no parser reads back.
    ("kraken_ws", "regression-year-102-round-trip", ""),
    ("kraken_ws", "regression-deep-nesting", "invalid JSON: maximum recursion depth"),
    ("kraken_ws", "regression-integer-too-long", "invalid JSON: Exceeds the limit"),
    ("kraken_ws", "regression-offset-before-year-1", "timestamp out of range in UTC"),
    ("kraken_ws", "regression-infinite-price", "invalid trade: price: Input should be a finite number"),
    ("kraken_ws", "regression-trade-id-beyond-int64", "invalid trade: trade_id: Input should be less than"),
    # A status whose data is an object, and acks with odd result/symbol types, raised in the client.
    ("kraken_ws", "regression-status-data-not-list", ""),
    ("kraken_ws", "regression-ack-result-not-object", "subscription failed for ?"),
    ("kraken_ws", "regression-ack-symbol-not-string", ""),
    ("kraken_rest", "regression-last-not-integer", "last is not an integer: '17672256005000.0000'"),
    ("kraken_rest", "regression-empty-error-text", "Kraken answered with an error: ''"),
    ("kraken_rest", "regression-payload-not-object", "response is a JSON list, not an object"),
    ("kraken_rest", "regression-error-not-list", "Kraken answered with an error: '5'"),
    ("kraken_rest", "regression-time-out-of-range", "malformed trade row"),
    ("kraken_rest", "regression-price-too-large-for-float", "malformed trade row"),
    ("kraken_rest", "regression-time-beyond-gmtime", "Value too large for defined data type"),
    ("news_cryptopanic", "regression-deep-nesting", "malformed JSON page: maximum recursion depth"),
    ("news_cryptopanic", "regression-offset-before-year-1", "date out of range"),
    ("news_feed", "regression-unknown-encoding", "unreadable XML feed: unknown encoding"),
    ("news_feed", "regression-multibyte-encoding", "unreadable XML feed: multi-byte encodings"),
    ("news_feed", "regression-pubdate-year-overflow", "unreadable date"),
    ("news_feed", "regression-offset-past-year-9999", "date out of range"),
    ("news_feed", "regression-url-with-tabs", "url contains control characters"),
    ("grpc_requests", "regression-ledger-since-nanos", "INVALID_ARGUMENT: since is not a valid time"),
]


@pytest.mark.parametrize(
    ("target", "name", "reason"), REGRESSIONS, ids=[f"{t}/{n}" for t, n, _ in REGRESSIONS]
)
def test_crashing_input_is_now_rejected_with_its_reason(target: str, name: str, reason: str) -> None:
    reasons = _reasons(target, (CORPUS / target / name).read_bytes())
    if reason:
        assert any(reason in text for text in reasons), reasons
    else:
        assert reasons == []


def test_every_regression_input_has_a_row() -> None:
    files = {(path.parent.name, path.name) for path in CORPUS.glob("*/regression-*")}
    assert files == {(target, name) for target, name, _ in REGRESSIONS}


@pytest.mark.parametrize("target", sorted(CHECKS))
def test_corpus_inputs_satisfy_the_invariant(target: str) -> None:
    inputs = sorted((CORPUS / target).iterdir())
    assert any(path.name.startswith("seed-") for path in inputs)
    for path in inputs:
        CHECKS[target](path.read_bytes())
