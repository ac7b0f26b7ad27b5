"""Venue health without a service: our candles against a venue's OHLC rows (cryptopredict.venue_check), and
what the feed's metrics say about a venue client (cryptopredict.metrics: exchange labels, online gauge)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from prometheus_client import REGISTRY

from cryptopredict import metrics
from cryptopredict.models import Trade, TradeBatch
from cryptopredict.venue_check import compare_candles, relative_deviation, window_floor
from cryptopredict.venue_rest import OhlcRow

pytestmark = pytest.mark.unit

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def ours(*rows: tuple[float, float, float, float, float]) -> pd.DataFrame:
    """Stored 1m candles from START, as the store's reader returns them."""
    return pd.DataFrame(
        [
            {"window_start": pd.Timestamp(START + timedelta(minutes=i)), "open": o, "high": h, "low": lo,
             "close": c, "volume": v}
            for i, (o, h, lo, c, v) in enumerate(rows)
        ]
    )  # fmt: skip


def venue(*rows: tuple[float, float, float, float, float], first: int = 0) -> list[OhlcRow]:
    start = int(START.timestamp()) + 60 * first
    return [
        OhlcRow(start + 60 * i, o, h, lo, c, (h + lo) / 2, v, 3) for i, (o, h, lo, c, v) in enumerate(rows)
    ]


CANDLES = [
    (100.0, 101.0, 99.0, 100.5, 2.5),
    (100.5, 102.0, 100.0, 101.0, 1.25),
    (101.0, 101.0, 101.0, 101.0, 0),
]


def test_relative_deviation_is_symmetric_and_bounded() -> None:
    assert relative_deviation(100.0, 100.0) == 0.0 and relative_deviation(0.0, 0.0) == 0.0
    assert relative_deviation(102.0, 100.0) == relative_deviation(100.0, 102.0) == pytest.approx(2 / 102)
    assert relative_deviation(0.0, 3.0) == relative_deviation(3.0, 0.0) == 1.0


def test_agreeing_candles_deviate_by_nothing() -> None:
    comparison = compare_candles(ours(*CANDLES), venue(*CANDLES), tolerance=0.01)
    assert [w.window_start for w in comparison.windows] == [START + timedelta(minutes=i) for i in range(3)]
    assert comparison.max_deviation == 0.0 and comparison.disagreeing == []
    assert comparison.unmatched_venue_rows == 0


def test_a_candle_beyond_the_tolerance_disagrees_and_names_its_field() -> None:
    theirs = list(CANDLES)
    theirs[1] = (100.5, 102.0, 100.0, 101.0, 1.0)  # the venue saw a fifth less volume in the second window
    theirs[0] = (100.0, 101.0, 99.0, 100.5 * 1.001, 2.5)  # within the tolerance
    comparison = compare_candles(ours(*CANDLES), venue(*theirs), tolerance=0.01)
    (window,) = comparison.disagreeing
    assert (window.window_start, window.field, window.ours, window.venue) == (
        START + timedelta(minutes=1), "volume", 1.25, 1.0,
    )  # fmt: skip
    assert window.deviation == comparison.max_deviation == pytest.approx(0.2)
    assert comparison.windows[0].field == "close" and comparison.windows[0].deviation < 0.01


def test_windows_the_venue_lists_not_agree_only_when_ours_had_no_trade() -> None:
    # The venue lists the first window alone: the second had trades here (disagrees fully), the third is a
    # gap candle (venues that list no empty windows agree with it).
    comparison = compare_candles(ours(*CANDLES), venue(CANDLES[0]), tolerance=0.01)
    assert [(w.field, w.deviation, w.venue) for w in comparison.windows[1:]] == [
        ("missing", 1.0, None),
        ("missing", 0.0, None),
    ]
    assert len(comparison.disagreeing) == 1


def test_venue_rows_without_our_candle_are_not_judged_and_nan_disagrees() -> None:
    rows = venue(*CANDLES, (101.0, 101.0, 101.0, 101.0, 0.0))  # a fourth window the store lacks
    comparison = compare_candles(ours(*CANDLES), rows, tolerance=0.01)
    assert comparison.unmatched_venue_rows == 1 and comparison.disagreeing == []
    nan = venue((100.0, 101.0, 99.0, float("nan"), 2.5))
    (window,) = compare_candles(ours(CANDLES[0]), nan, tolerance=0.5).windows
    assert window.deviation == 1.0 and window.field == "close"
    assert compare_candles(ours(), [], tolerance=0.01).max_deviation == 0.0


def test_window_floor() -> None:
    assert window_floor(START + timedelta(seconds=59.9)) == START
    assert window_floor(START + timedelta(minutes=1)) == START + timedelta(minutes=1)


@dataclass
class Client:
    """The attributes of a venue client the metrics read (cryptopredict.metrics.FeedClient)."""

    exchange: str
    pairs: list[str]
    status: str = "connecting"
    counts: Counter[str] = field(default_factory=Counter)


def samples(collector: metrics.FeedCounts) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_feed_counts_carry_the_exchange_and_whether_the_venue_is_online() -> None:
    collector = metrics.FeedCounts()
    assert samples(collector) == {}  # nothing before a client is tracked
    client = Client("coinbase", ["BTC/USD"], counts=Counter(trades=5, reconnects=2))
    collector.track(client)
    assert samples(collector) == {
        ("cryptopredict_feed_events_total", (("event", "reconnects"), ("exchange", "coinbase"))): 2,
        ("cryptopredict_feed_events_total", (("event", "trades"), ("exchange", "coinbase"))): 5,
        ("cryptopredict_feed_reconnects_total", (("exchange", "coinbase"),)): 2,
        ("cryptopredict_feed_venue_online", (("exchange", "coinbase"),)): 0,
    }
    client.status = "online"
    assert samples(collector)[("cryptopredict_feed_venue_online", (("exchange", "coinbase"),))] == 1
    client.status = "maintenance"
    assert samples(collector)[("cryptopredict_feed_venue_online", (("exchange", "coinbase"),))] == 0


def test_tracked_pairs_count_from_zero_and_batches_by_venue_and_pair() -> None:
    tracked = metrics.FEED_COUNTS.client
    try:
        metrics.track_feed(Client("binance", ["QUIET/USDT"]), namespace="unit")
        quiet = {"exchange": "binance", "pair": "unit.QUIET/USDT"}
        assert REGISTRY.get_sample_value("cryptopredict_feed_trades_total", quiet) == 0.0
    finally:
        metrics.FEED_COUNTS.client = tracked
    stamp = START + timedelta(seconds=7)
    trades = [
        Trade(exchange="binance", pair="unit.LOUD/USDT", trade_id=i, price=1.0, qty=1.0, side="buy",
              timestamp=stamp - timedelta(seconds=i), ingested_at=stamp)
        for i in range(3)
    ]  # fmt: skip
    metrics.feed_published(TradeBatch(exchange="binance", pair="unit.LOUD/USDT", trades=trades))
    loud = {"exchange": "binance", "pair": "unit.LOUD/USDT"}
    assert REGISTRY.get_sample_value("cryptopredict_feed_trades_total", loud) == 3
    assert (
        REGISTRY.get_sample_value("cryptopredict_feed_last_trade_timestamp_seconds", loud)
        == stamp.timestamp()
    )
