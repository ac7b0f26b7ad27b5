"""The outcome ledger on the real PostgreSQL: a prediction meets its realised close once the candle at
its target time is in the store, and the live figures per model version follow from the errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from topic_prefixes import session_pair

from cryptopredict.ml.intervals import christoffersen_pvalue, kupiec_pvalue
from cryptopredict.models import Prediction
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles, upsert_predictions
from cryptopredict.store.ledger import ledger_summary
from cryptopredict.store.migrate import migrate

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)


def prediction(pair: str, candle, predicted: float, version: str, bounds=(None, None)) -> Prediction:
    return Prediction(
        pair=pair,
        interval_s=60,
        horizon_s=60,
        made_at=candle.window_end,
        feature_time=candle.window_start,
        target_time=candle.window_end + STEP,
        last_price=candle.close,
        predicted_price=predicted,
        lower_price=bounds[0],
        upper_price=bounds[1],
        model_name="ledger-test",
        model_version=version,
    )


async def test_live_error_skill_and_coverage_per_model_version(settings):
    migrate(settings.postgres)
    pair = session_pair("L")
    candles = synthetic_candles(pair, 60, 6, T0, seed=1)
    engine = async_engine(settings.postgres)
    # v1: persistence (predicts the last close, interval +-1); v2: off by +10 with a narrow interval.
    first = [prediction(pair, c, c.close, "1", (c.close - 1, c.close + 1)) for c in candles[:4]]
    second = [prediction(pair, c, c.close + 10, "2", (c.close + 9, c.close + 11)) for c in candles[:4]]
    pending = prediction(pair, candles[5], 1.0, "2")  # its target candle is not in the store yet
    await upsert_predictions(engine, [*first, *second, pending])
    await upsert_predictions(engine, first)  # a redelivered prediction is one row
    await upsert_candles(engine, candles)
    await engine.dispose()

    sync = sync_engine(settings.postgres)
    try:
        figures = {f.model_version: f for f in ledger_summary(sync, pair, 60, T0)}
    finally:
        sync.dispose()
    realised = {c.window_end: c.close for c in candles}
    persistence_mae = sum(abs(c.close - realised[c.window_end + STEP]) for c in candles[:4]) / 4
    one, two = figures["1"], figures["2"]
    assert (one.n, two.n) == (4, 4)  # the pending prediction has no outcome yet
    assert one.live_mae == pytest.approx(persistence_mae) and one.skill_vs_persistence == pytest.approx(0.0)
    expected_two = sum(abs(c.close + 10 - realised[c.window_end + STEP]) for c in candles[:4]) / 4
    assert two.live_mae == pytest.approx(expected_two)
    assert two.skill_vs_persistence == pytest.approx(1 - expected_two / persistence_mae)
    inside = sum(abs(c.close - realised[c.window_end + STEP]) <= 1 for c in candles[:4]) / 4
    assert one.interval_coverage == pytest.approx(inside)


# Outcome by outcome, in target time order: inside the interval or not, the regime the forecast was made
# in and the level its interval was drawn at (None: made before predictions said, scored at nominal).
INSIDE = [True, True, False, False, True, False, True, False, True, True]
REGIMES = ["calm", "calm", "wild", "wild", "mid", "mid", "calm", "wild", "mid", None]
LEVELS = [0.8, 0.8, 0.85, 0.85, 0.8, None, 0.75, 0.9, 0.8, 0.8]
NOMINAL = 0.8


def interval_around(realised: float, i: int) -> tuple[float, float]:
    """A band that holds `realised` when INSIDE[i]; otherwise one that misses it by 3 (above) or 4 (below)."""
    if INSIDE[i]:
        return realised - 1.0, realised + 2.0
    return (realised + 3.0, realised + 5.0) if i % 2 else (realised - 6.0, realised - 4.0)


async def test_interval_figures_per_regime_score_and_coverage_tests(settings):
    migrate(settings.postgres)
    pair = session_pair("L")
    candles = synthetic_candles(pair, 60, len(INSIDE) + 1, T0, seed=2)
    realised = [c.close for c in candles[1:]]  # each prediction's target candle is the next one
    with_intervals = [
        prediction(pair, c, c.close, "1", interval_around(realised[i], i)).model_copy(
            update={
                "volatility_regime": REGIMES[i],
                "interval_level": LEVELS[i],
                "predicted_volatility": 0.001,
            }
        )
        for i, c in enumerate(candles[:-1])
    ]
    without = [prediction(pair, c, c.close, "2") for c in candles[:-1]]
    engine = async_engine(settings.postgres)
    # Stored out of order: the ledger orders the outcomes by target time itself.
    await upsert_predictions(engine, [*reversed(with_intervals[5:]), *with_intervals[:5], *without])
    await upsert_candles(engine, candles)
    await engine.dispose()

    sync = sync_engine(settings.postgres)
    try:
        figures = {f.model_version: f for f in ledger_summary(sync, pair, 60, T0, nominal_coverage=NOMINAL)}
    finally:
        sync.dispose()
    one, two = figures["1"], figures["2"]
    assert one.n == len(INSIDE) and one.interval_coverage == pytest.approx(INSIDE.count(True) / len(INSIDE))
    # calm: 3 of 3 inside; mid: 2 of 3; wild: 0 of 3; the outcome without a regime counts in none.
    assert one.coverage_by_regime == pytest.approx({"calm": 1.0, "mid": 2 / 3, "wild": 0.0})
    # Winkler at each interval's own level: width, plus 2 / (1 - level) times how far the outcome missed.
    scores = []
    for i, p in enumerate(with_intervals):
        level = NOMINAL if LEVELS[i] is None else LEVELS[i]
        miss = max(p.lower_price - realised[i], 0.0) + max(realised[i] - p.upper_price, 0.0)
        assert (miss == 0) == INSIDE[i]
        scores.append(p.upper_price - p.lower_price + 2.0 / (1.0 - level) * miss)
    assert one.interval_score == pytest.approx(sum(scores) / len(scores))
    assert one.kupiec_pvalue == pytest.approx(kupiec_pvalue(INSIDE, NOMINAL))
    assert one.christoffersen_pvalue == pytest.approx(christoffersen_pvalue(INSIDE))
    # Another order of the same outcomes would give another independence p-value: the order is checked.
    assert christoffersen_pvalue(INSIDE) != pytest.approx(christoffersen_pvalue(sorted(INSIDE)))
    # A model without intervals has none of these figures.
    assert two.interval_coverage is None and two.coverage_by_regime == {}
    assert (two.interval_score, two.kupiec_pvalue, two.christoffersen_pvalue) == (None, None, None)
