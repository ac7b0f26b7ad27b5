"""`record` writes a live session to Parquet, and the replay exchange serves that file again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from cryptopredict.kraken.record import record_trades
from cryptopredict.kraken.sources import synthetic_market, trades_file
from cryptopredict.simulators import replay_exchange
from streams.trade_feed import trade_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("venue", ["kraken", "coinbase", "binance"])
async def test_recorded_session_replays_identically(tmp_path, settings, venue):
    pairs = ["BTC/USDT", "ETH/USDT"] if venue == "binance" else ["BTC/USD", "ETH/USD"]
    trades = synthetic_market(pairs, datetime(2026, 7, 1, tzinfo=UTC), minutes=5, seed=4)
    exchange = replay_exchange(venue)(trades, speed="max")
    await exchange.start()
    path = tmp_path / "session.parquet"
    venue_settings = settings.model_copy(
        update={venue: settings.venue(venue).model_copy(update={"pairs": pairs})}
    )
    try:
        client = trade_client(venue_settings, exchange.url, exchange.rest_url, venue)
        written = await asyncio.wait_for(
            record_trades(client, path, max_trades=len(trades), row_group=100), 60
        )
    finally:
        await exchange.stop()
    assert written == len(trades)
    key = lambda t: (t.pair, t.trade_id)  # noqa: E731
    replayed = sorted(trades_file(path), key=key)
    expected = sorted(trades, key=key)
    # Binance stamps trades in milliseconds.
    precision = 1000 if venue == "binance" else 1

    def stamp(t):
        return t.timestamp.replace(microsecond=t.timestamp.microsecond // precision * precision)

    assert [(t.exchange, t.pair, t.trade_id, t.price, t.qty, t.side, t.timestamp) for t in replayed] == [
        (venue, t.pair, t.trade_id, t.price, t.qty, t.side, stamp(t)) for t in expected
    ]
