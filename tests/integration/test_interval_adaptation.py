"""Adaptive conformal inference on the real PostgreSQL: the level of a model version's intervals follows
the coverage its outcomes had, is kept in the store across calls (a restarted worker goes on from it),
and two workers updating at once count each outcome once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from topic_prefixes import session_pair

from cryptopredict.ml.intervals import aci_update
from cryptopredict.models import Prediction
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.adaptation import adapt_interval_level
from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles, upsert_predictions
from cryptopredict.store.migrate import migrate

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
GAMMA = 0.05


def prediction(pair: str, candle, realised: float, inside: bool, version: str) -> Prediction:
    """An interval around the realised price (inside) or beside it (a miss)."""
    low, high = (realised * 0.99, realised * 1.01) if inside else (realised * 1.01, realised * 1.02)
    return Prediction(
        pair=pair,
        interval_s=60,
        horizon_s=60,
        made_at=candle.window_end,
        feature_time=candle.window_start,
        target_time=candle.window_end + STEP,
        last_price=candle.close,
        predicted_price=candle.close,
        lower_price=low,
        upper_price=high,
        interval_level=0.8,
        model_name=f"aci-test-{pair}",
        model_version=version,
    )


async def store(settings, pair: str, hits: list[bool], version: str = "1") -> None:
    candles = synthetic_candles(pair, 60, len(hits) + 1, T0, seed=3)
    engine = async_engine(settings.postgres)
    await upsert_candles(engine, candles)
    await upsert_predictions(
        engine,
        [
            prediction(pair, c, candles[i + 1].close, hit, version)
            for i, (c, hit) in enumerate(zip(candles[:-1], hits, strict=True))
        ],
    )
    await engine.dispose()


async def test_misses_widen_the_interval_and_the_state_carries_over(settings):
    migrate(settings.postgres)
    pair = session_pair("A")
    name = f"aci-test-{pair}"
    hits = [False, False, True, False, True, True, False, False]
    await store(settings, pair, hits)
    engine = sync_engine(settings.postgres)
    try:
        first = adapt_interval_level(engine, name, "1", 0.8, GAMMA)
        expected = 1.0 - aci_update(0.2, [not h for h in hits], 0.2, GAMMA)
        assert first.level == pytest.approx(expected) and first.level > 0.8  # 5 misses of 8: wider
        assert (first.outcomes, first.misses) == (8, 5)
        # Nothing new: the stored level, whatever nominal the caller passes (it only seeds a new row).
        again = adapt_interval_level(engine, name, "1", 0.5, GAMMA)
        assert again == first
        # Another version starts from nominal.
        assert adapt_interval_level(engine, name, "2", 0.8, GAMMA).level == pytest.approx(0.8)
    finally:
        engine.dispose()


async def test_two_workers_at_once_count_each_outcome_once(settings):
    migrate(settings.postgres)
    pair = session_pair("B")
    hits = [i % 3 != 0 for i in range(60)]
    await store(settings, pair, hits)
    engine = sync_engine(settings.postgres)
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(
                    lambda _: adapt_interval_level(engine, f"aci-test-{pair}", "1", 0.8, GAMMA), range(8)
                )
            )
    finally:
        engine.dispose()
    final = max(results, key=lambda r: r.outcomes)
    assert (final.outcomes, final.misses) == (60, 20)
    assert final.level == pytest.approx(1.0 - aci_update(0.2, [not h for h in hits], 0.2, GAMMA))
