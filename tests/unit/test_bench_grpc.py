"""Pure helpers of bench/grpc.py and bench/report.py: percentiles, the open-loop schedule, load splitting,
verdicts, figures merged over repeated runs."""

import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# bench/ is a directory of scripts, not on the test path: load the script by its file.
_spec = importlib.util.spec_from_file_location(
    "bench_grpc", Path(__file__).resolve().parents[2] / "bench" / "grpc.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def test_the_bench_module_does_not_shadow_the_grpc_package():
    # Run as `python bench/grpc.py`, bench/ would come first on sys.path; the module removes it.
    assert hasattr(bench.grpc, "aio") and bench.grpc is not bench


def test_summary_of_a_sample_and_of_nothing():
    figures = bench.summary([float(v) for v in range(1, 101)])
    assert figures["n"] == 100 and figures["max"] == 100.0
    assert figures["p50"] == pytest.approx(50.5) and figures["p99"] == pytest.approx(99.01)
    empty = bench.summary([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("p50", "p95", "p99", "max"))


def test_poisson_schedule_is_increasing_inside_the_window_at_about_the_rate():
    times = bench.poisson_schedule(200.0, 50.0, random.Random(1))
    assert times == sorted(times) and 0 < times[0] and times[-1] < 50.0
    assert len(times) == pytest.approx(10_000, rel=0.05)
    assert bench.poisson_schedule(200.0, 50.0, random.Random(1)) == times  # seeded: reproducible


def test_split_spreads_evenly_and_keeps_the_total():
    assert bench.split(100, 2) == [50, 50]
    assert bench.split(1000, 3) == [334, 333, 333]
    assert bench.split(1, 4) == [1, 0, 0, 0]


def test_verdict_needs_the_median_within_the_target_and_every_run_within_half_again():
    Spread = bench.Spread
    assert bench.verdict(Spread((0.4, 0.5, 0.7)), 0.5) == "met"
    assert bench.verdict(Spread((0.51, 0.4, 0.52)), 0.5) == "missed"  # the median
    assert bench.verdict(Spread((0.4, 0.4, 0.76)), 0.5) == "missed"  # one run past 1.5x
    assert bench.verdict(Spread((0.4, float("nan"), 0.4)), 0.5) == "missed"  # a run without the figure


def test_formatting_gives_the_median_and_the_range():
    assert bench.fmt(float("nan")) == "n/a" and bench.fmt(1234.5678) == "1,234.57"
    assert bench.fmt(bench.Spread((3.0, 1.0, 2.5))) == "2.50 (1.00-3.00)"
    assert f"{bench.Spread((1000, 998, 1000)):,}" == "1,000"  # a spec formats the median


def test_runs_merge_numbers_into_spreads_and_keep_what_they_share():
    merged = bench.across_runs(
        [
            {"mode": "open", "lat": {"p99": 1.0}, "rows": [{"n": 1}], "kinds": ["a"], "none": None},
            {"mode": "open", "lat": {"p99": 3.0}, "rows": [{"n": 2}], "kinds": ["b"], "none": None},
            {"mode": "open", "lat": {"p99": 2.0}, "rows": [{"n": 3}], "kinds": ["a"], "none": None},
        ]
    )
    assert merged["mode"] == "open" and merged["none"] is None
    assert merged["lat"]["p99"] == bench.Spread((1.0, 3.0, 2.0)) and merged["lat"]["p99"].median == 2.0
    assert merged["rows"][0]["n"].runs == (1, 2, 3)
    assert merged["kinds"] == ["a; b"]


def test_the_json_line_has_medians_and_each_runs_values():
    figures = bench.median_figures(
        {"unary_p99_ms": bench.Spread((1.2345, 0.9, 1.1)), "subscribers": 1000}, {"unary_p99_ms": 3}
    )
    assert figures == {"unary_p99_ms": 1.1, "unary_p99_ms_runs": [1.234, 0.9, 1.1], "subscribers": 1000}


def test_rest_of_the_machine_excludes_server_and_clients():
    cpu = {"wall_s": 10.0, "server_s": 4.0, "machine_busy": 0.75}  # 1.5 of 2 cores busy
    assert bench.others(cpu, clients_s=6.0) == pytest.approx(1.5 * (bench.os.cpu_count() or 1) / 2 - 1.0)
    assert bench.others(cpu, clients_s=100.0) == 0.0  # never negative


def test_bench_predictions_are_valid_and_ordered_by_minute():
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    first, second = bench.make_prediction("FANOUT/USD", 1, now), bench.make_prediction("FANOUT/USD", 2, now)
    assert second.feature_time > first.feature_time and first.target_time > first.feature_time
    assert first.lower_price <= first.predicted_price <= first.upper_price
