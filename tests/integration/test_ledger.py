"""The outcome ledger on the real PostgreSQL: a prediction meets its realised close once the candle at
its target time is in the store, and the live figures per model version follow from the errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.ml.synthetic import synthetic_candles
from cryptopredict.models import Prediction
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
    pair = f"L{uuid.uuid4().hex[:5].upper()}/USD"
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
