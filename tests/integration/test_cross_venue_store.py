"""Cross-venue inputs read from the real feature store: one coin on Kraken and Coinbase under the same
bare pair, the retrain's full read and the prediction agent's window, each venue's rows only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from topic_prefixes import session_pair

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml.dataset import build_dataset, indicator_values
from cryptopredict.settings import get_settings
from cryptopredict.topics import market_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2024, 7, 1, tzinfo=UTC)


async def test_the_retrain_and_the_live_row_read_the_other_venues_candles_of_the_coin() -> None:
    from cryptopredict.simulators.markets import two_venue_candles
    from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles
    from cryptopredict.store.inputs import read_cross_venue_candles, read_stored_inputs
    from cryptopredict.store.migrate import migrate

    settings = get_settings()
    migrate(settings.postgres)
    pair = session_pair("XV")
    leader_market = market_key("coinbase", pair)
    leader, follower = two_venue_candles(leader_market, pair, 60, 300, T0, lead=2, seed=4)
    writer = async_engine(settings.postgres)
    await upsert_candles(writer, [*leader, *follower])
    await writer.dispose()

    config, engine = IndicatorConfig(), sync_engine(settings.postgres)
    try:
        inputs = read_stored_inputs(engine, pair, 60, config, {"coinbase": leader_market})
        assert inputs is not None and inputs.cross_venue is not None
        t = follower[100].window_start
        window = read_cross_venue_candles(
            engine, {"coinbase": leader_market}, 60, t - timedelta(minutes=4), t
        )
    finally:
        engine.dispose()

    stored = inputs.cross_venue["coinbase"]
    assert len(stored) == 300 and set(stored["exchange"]) == {"coinbase"}  # not Kraken's rows of the pair
    assert stored["close"].tolist() == pytest.approx([c.close for c in leader], rel=1e-12)
    read = build_dataset(inputs.candles, 60, 5, 1, inputs.indicators, None, config, inputs.cross_venue, 3)
    ours = pd.DataFrame([c.model_dump() for c in follower])
    values, _ = indicator_values(ours, pair, 60, None, config)
    others = {"coinbase": pd.DataFrame([c.model_dump() for c in leader])}
    built = build_dataset(ours, 60, 5, 1, values, None, config, others, 3)
    assert "xv_coinbase_spread" in read.features and len(read.frame) > 200
    pd.testing.assert_frame_equal(read.frame[read.features], built.frame[built.features], rtol=1e-12)

    live = window["coinbase"]
    assert list(live["window_start"]) == [c.window_start for c in leader[96:100]]  # closed by t, 4 of them
