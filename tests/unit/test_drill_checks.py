"""The drill's pure parts: what an uninterrupted run of a seeded replay makes, how a drilled run is
compared with it, when the store counts as away, and the table it writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from cryptopredict.drill.checks import Findings, ledger_differences, prediction_differences
from cryptopredict.drill.expected import compare_keys, differing_values, expected_candles, expected_keys
from cryptopredict.drill.runner import FAULTS, FaultResult, markdown_table
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import Trade
from cryptopredict.store.candles import store_unreachable

pytestmark = pytest.mark.unit

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def trade(pair: str, second: float, price: float, trade_id: int) -> Trade:
    at = T0 + timedelta(seconds=second)
    return Trade(pair=pair, trade_id=trade_id, price=price, qty=1.0, side="buy", timestamp=at, ingested_at=at)


def test_expected_candles_are_the_windows_later_trades_close() -> None:
    trades = [trade("AA/USD", 1, 10, 1), trade("AA/USD", 61, 11, 2), trade("AA/USD", 130, 12, 3)]
    closed = expected_candles(trades, ["AA/USD"], (60,), grace_s=0)
    assert [(c.window_start, c.open, c.close) for c in closed[60]] == [
        (T0, 10, 10),
        (T0 + timedelta(minutes=1), 11, 11),
    ]  # the last window stays open: no later trade closes it
    assert expected_keys(trades, ["AA/USD"], (60,), 0) == {
        ("AA/USD", 60, T0),
        ("AA/USD", 60, T0 + timedelta(minutes=1)),
    }


def test_a_seeded_replay_is_the_same_every_time() -> None:
    pairs = ["DAX/USD", "DBX/USD"]
    first = expected_keys(synthetic_market(pairs, T0, 10, seed=41), pairs, (60, 300), 0)
    again = expected_keys(synthetic_market(pairs, T0, 10, seed=41), pairs, (60, 300), 0)
    assert first == again and len(first) >= 2 * 9


def test_compare_keys_finds_lost_duplicated_and_extra() -> None:
    difference = compare_keys({"a", "b", "c"}, ["a", "b", "b", "d"])
    assert difference.lost == {"c"} and difference.duplicated == {"b"} and difference.extra == {"d"}
    assert not difference.clean
    assert compare_keys({"a"}, ["a"]).clean


def test_a_redelivery_is_no_differing_value_two_values_are() -> None:
    assert differing_values([("k", "1"), ("k", "1"), ("j", "2")]) == frozenset()
    assert differing_values([("k", "1"), ("k", "2")]) == {"k"}


def test_one_prediction_per_model_version_candle_and_horizon() -> None:
    minute = {("AA/USD", 60, T0), ("AA/USD", 60, T0 + timedelta(minutes=1))}
    rows = [
        ("AA/USD", 60, T0, 60, "m", "1"),
        ("AA/USD", 60, T0, 60, "m", "2"),  # another version of the same candle: fine
    ]
    difference = prediction_differences(minute, rows, 60)
    assert difference.lost == {("AA/USD", 60, T0 + timedelta(minutes=1), 60)}
    assert not difference.duplicated
    assert prediction_differences(minute, [*rows, rows[0]], 60).duplicated == {rows[0]}


def test_a_ledger_row_for_each_prediction_whose_target_candle_closed() -> None:
    due = ("AA/USD", 60, T0, 60, "m", "1")  # target: the candle ending at T0 + 2 min
    not_yet = ("AA/USD", 60, T0 + timedelta(minutes=1), 60, "m", "1")
    last_close = T0 + timedelta(minutes=2)
    assert ledger_differences([due, not_yet], [], last_close, 60).lost == {due}
    assert ledger_differences([due, not_yet], [due], last_close, 60).clean


def test_findings_add_up_and_name_what_differs() -> None:
    findings = Findings(
        {"candles": compare_keys({"a", "b"}, ["a"]), "predictions": compare_keys({"x"}, ["x", "x"])}
    )
    assert (findings.lost, findings.duplicated) == (1, 1)
    assert findings.summary("lost") == "1 candles" and findings.summary("duplicated") == "1 predictions"


def test_the_store_is_away_when_the_connection_is_not_when_a_row_is_wrong() -> None:
    assert store_unreachable(ConnectionRefusedError(111, "Connect call failed"))
    wrapped = DBAPIError("INSERT", {}, asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert store_unreachable(wrapped)
    assert store_unreachable(DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True))
    assert not store_unreachable(IntegrityError("INSERT", {}, asyncpg.exceptions.UniqueViolationError("dup")))
    assert not store_unreachable(ValueError("bad row"))


def test_every_fault_has_a_name_and_the_table_has_its_columns() -> None:
    assert {"postgres", "stream-worker"} <= FAULTS.keys()
    result = FaultResult("postgres", "PostgreSQL stopped", 10, "streams stay open", 1.5, "0", "0")
    failed = FaultResult("kafka", "broker stopped", 10, failures=["3 candles lost"])
    table = markdown_table([result, failed])
    assert "| postgres (PostgreSQL stopped, 10 s) | streams stay open | 1.5 s | 0 | 0 | ok |" in table
    assert "FAILED: 3 candles lost" in table


def test_the_report_replaces_only_the_table(tmp_path: Path) -> None:
    from cryptopredict.cli.drill import BEGIN, END, write_report

    doc = tmp_path / "reliability.md"
    doc.write_text(f"# Reliability\n\n{BEGIN}\nold\n{END}\n\n## Guards\n")
    write_report(doc, [FaultResult("postgres", "PostgreSQL stopped", 30, "x", 2.0)], None, 120)
    text = doc.read_text()
    assert "old" not in text and "| postgres (PostgreSQL stopped, 30 s) |" in text
    assert text.startswith("# Reliability\n") and text.endswith("## Guards\n")
