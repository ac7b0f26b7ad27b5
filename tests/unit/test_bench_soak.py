"""Pure figures of bench/soak.py: RSS growth, the candles a run closed, lost and duplicated, windowed p99."""

import importlib.util
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# bench/ is a directory of scripts, not on the test path: load the script by its file.
_spec = importlib.util.spec_from_file_location(
    "bench_soak", Path(__file__).resolve().parents[2] / "bench" / "soak.py"
)
assert _spec is not None and _spec.loader is not None
soak = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = soak  # dataclasses look their module up there
_spec.loader.exec_module(soak)


def test_rss_growth_is_the_least_squares_slope_after_the_warm_up_in_mb_per_hour():
    # 2 MB (2048 kB) a minute after the warm-up; a big start-up jump before it is left out.
    samples = [(0.0, 1000.0), (30.0, 90_000.0)] + [(60.0 + 60 * i, 100_000.0 + 2048 * i) for i in range(10)]
    assert soak.rss_growth_mb_per_h(samples, 60.0) == pytest.approx(120.0)
    noisy = [(60.0 + 5 * i, 100_000.0 + (300 if i % 2 else -300)) for i in range(200)]
    assert abs(soak.rss_growth_mb_per_h(noisy, 60.0)) < 1.0
    assert math.isnan(soak.rss_growth_mb_per_h(samples, 10_000.0))


def test_closed_windows_are_those_a_later_trade_closed_at_or_after_the_start():
    starts = {"A/USD": {0, 60, 120, 180}, "B/USD": {0, 60}}
    last = {"A/USD": 245.0, "B/USD": 130.0}
    # A: window 0 closes at 65 (before the run's start at 100), 60 at 125, 120 at 185; 180 would close
    # at 245 and the last trade is at exactly 245. B: window 60 closes at 125 <= 130.
    assert soak.closed_windows(starts, last, grace_s=5.0, from_s=100.0) == {
        ("A/USD", 60),
        ("A/USD", 120),
        ("A/USD", 180),
        ("B/USD", 60),
    }


def test_delivery_counts_missing_and_extra_copies_per_subscriber():
    expected = {("A/USD", 60), ("A/USD", 120)}
    received = [
        (0, "A/USD", 60),
        (0, "A/USD", 120),
        (1, "A/USD", 60),
        (1, "A/USD", 60),  # a second copy
        (1, "A/USD", 0),  # the snapshot at subscription: not a window of the run
        (2, "A/USD", 120),
    ]
    # stream 1 misses 120, stream 2 misses 60: 2 lost of 3 x 2; one duplicate
    assert soak.delivery(expected, 3, received) == (2, 1)
    assert soak.delivery(expected, 1, [(0, "A/USD", 60), (0, "A/USD", 120)]) == (0, 0)


def test_p99_between_takes_the_closes_in_the_window():
    latencies = [(float(t), 10.0) for t in range(60)] + [(float(t), 1000.0) for t in range(60, 120)]
    assert soak.p99_between(latencies, 0.0, 60.0) == pytest.approx(10.0)
    assert soak.p99_between(latencies, 60.0, 120.0) == pytest.approx(1000.0)
    assert math.isnan(soak.p99_between(latencies, 500.0, 560.0))


def test_verdicts_pass_and_fail():
    figures = {"lost": 0, "duplicated": 0, "p99_first_ms": 40.0, "p99_last_ms": 59.0}
    rows = soak.verdicts(figures, {"stream worker": 12.0, "gRPC server": -3.0})
    assert all(met for *_, met in rows)
    worse = soak.verdicts(figures | {"lost": 1, "p99_last_ms": 61.0}, {"stream worker": 50.0})
    assert [met for *_, met in worse] == [False, True, False, False]


def test_the_market_spreads_trades_over_the_tick_and_remembers_windows():
    market = soak.Market(["AA/USD", "BB/USD"])
    batch = market.batch("AA/USD", 4, 119.0, 121.0)
    assert [t.timestamp for t in batch.trades][-1] == datetime.fromtimestamp(121.0, UTC)
    assert [t.trade_id for t in batch.trades] == [1, 2, 3, 4]
    assert market.window_starts["AA/USD"] == {60, 120} and market.last_trade_s["AA/USD"] == 121.0
    assert market.sent == 4 and not market.window_starts["BB/USD"]


def test_the_run_starts_half_a_minute_past_the_next_candle_close():
    # closes at :05 (grace 5 s): the run starts at :35
    assert soak.run_start(1_000_000 * 60 + 10.0, 5.0) == 1_000_000 * 60 + 35.0
    assert soak.run_start(1_000_000 * 60 + 40.0, 5.0) == 1_000_001 * 60 + 35.0
    assert soak.run_start(1_000_000 * 60 + 35.0, 5.0) == 1_000_001 * 60 + 35.0
