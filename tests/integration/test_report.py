"""`cryptopredict report` against the real feature store: candles and predictions of a pair of its own,
written by the store's writers, then the command as a person runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from topic_prefixes import session_pair

from cryptopredict.ml.intervals import REGIMES, christoffersen_pvalue, kupiec_pvalue
from cryptopredict.models.ml import Prediction
from cryptopredict.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 6, 1, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUMMARY = re.compile(
    r"^(?P<title>.+) (?P<since>\d{4}-\d\d-\d\d \d\d:\d\d) \.\. (?P<until>\d{4}-\d\d-\d\d \d\d:\d\d) UTC: "
    r"(?P<n>[\d,]+) outcomes, live MAE (?P<mae>\S+), persistence MAE (?P<persistence>\S+), "
    r"skill (?P<skill>[+-][\d.]+)%, interval coverage (?P<coverage>[\d.]+)%, "
    r"by regime calm (?P<calm>[\d.]+)% mid (?P<mid>[\d.]+)% wild (?P<wild>[\d.]+)%, "
    r"interval score (?P<score>\S+), Kupiec p (?P<kupiec>\S+), Christoffersen p (?P<christoffersen>\S+)$"
)


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptopredict.cli", "report", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )


async def test_report_renders_the_charts_and_prints_the_ledgers_figures(tmp_path: Path) -> None:
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles, upsert_predictions
    from cryptopredict.store.ledger import ledger_summary
    from cryptopredict.store.migrate import migrate

    settings = get_settings()
    migrate(settings.postgres)
    pair = session_pair("R")
    candles = synthetic_candles(pair, 60, 600, T0, seed=5)  # 10 hours of 1m candles
    rng = np.random.default_rng(5)
    # Version 4 serves until minute 540, then the promoted version 5; the interval holds most outcomes.
    predictions = [
        Prediction(
            pair=pair,
            interval_s=60,
            horizon_s=60,
            made_at=c.window_end + timedelta(seconds=1),
            feature_time=c.window_start,
            target_time=c.window_end + timedelta(seconds=60),
            last_price=c.close,
            predicted_price=c.close * float(np.exp(rng.normal(0, 0.001))),
            lower_price=c.close * 0.998,
            upper_price=c.close * 1.002,
            volatility_regime=REGIMES[i % 3],
            model_name="cryptopredict-test",
            model_version="4" if i < 540 else "5",
        )
        for i, c in enumerate(candles[:-1])
    ]
    engine = async_engine(settings.postgres)
    await upsert_candles(engine, candles)
    await upsert_predictions(engine, predictions)
    await engine.dispose()

    out = tmp_path / "charts"
    done = report("--pair", pair, "--hours", "2", "--window", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr
    *paths, summary = done.stdout.strip().splitlines()
    assert [Path(p).name for p in paths] == ["price_predictions.png", "rolling_skill.png", "drift.png"]
    for path in map(Path, paths):
        assert path.parent == out
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 20 * 1024, (path, len(data))
    assert "... reading candles and outcomes" in done.stderr  # progress on stderr, results on stdout

    # The range ends at the newest candle; the summary is the ledger's over the same range.
    until = candles[-1].window_end
    since = until - timedelta(hours=2)
    match = SUMMARY.match(summary)
    assert match, summary
    assert match["title"] == f"{pair} 1m h1"
    assert (match["since"], match["until"]) == (f"{since:%Y-%m-%d %H:%M}", f"{until:%Y-%m-%d %H:%M}")
    sync = sync_engine(settings.postgres)
    versions = ledger_summary(sync, pair, 60, since)
    sync.dispose()
    assert [v.model_version for v in versions] == ["4", "5"]  # the promotion is inside the range
    n = sum(v.n for v in versions)
    live = sum(v.n * v.live_mae for v in versions) / n
    persistence = sum(v.n * v.persistence_mae for v in versions) / n
    coverage = sum(v.n * (v.interval_coverage or 0.0) for v in versions) / n
    assert int(match["n"].replace(",", "")) == n == 121  # target times since .. until, both included
    assert float(match["mae"]) == pytest.approx(live, rel=1e-5)
    assert float(match["persistence"]) == pytest.approx(persistence, rel=1e-5)
    assert float(match["skill"]) / 100 == pytest.approx(1 - live / persistence, abs=1e-6)
    assert float(match["coverage"]) / 100 == pytest.approx(coverage, abs=1e-4)
    # The interval figures over the same outcomes: their regimes, scores and the coverage tests.
    closes = {c.window_end: c.close for c in candles}
    outcomes = sorted(
        (p.target_time, p, closes[p.target_time], i % 3)
        for i, p in enumerate(predictions)
        if since <= p.target_time <= until
    )
    inside = [p.lower_price <= close <= p.upper_price for _, p, close, _ in outcomes]
    for index, regime in enumerate(REGIMES):
        hits = [hit for hit, (*_, r) in zip(inside, outcomes, strict=True) if r == index]
        assert float(match[regime]) / 100 == pytest.approx(sum(hits) / len(hits), abs=1e-4)
    score = sum(v.n * (v.interval_score or 0.0) for v in versions) / n
    assert float(match["score"]) == pytest.approx(score, rel=1e-5)
    nominal = get_settings().model.interval_coverage  # no prediction says its level: scored at nominal
    assert float(match["kupiec"]) == pytest.approx(kupiec_pvalue(inside, nominal), rel=1e-2)
    assert float(match["christoffersen"]) == pytest.approx(christoffersen_pvalue(inside), rel=1e-2)


def test_report_of_a_pair_without_data_says_so() -> None:
    done = report("--pair", session_pair("N"))
    assert done.returncode == 2
    assert "no candles of" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
