"""`record` writes a live session to Parquet, and the replay exchange serves that file again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from cryptopredict.kraken.client import KrakenTradeClient
from cryptopredict.kraken.record import record_trades
from cryptopredict.kraken.sources import synthetic_market, trades_file
from cryptopredict.simulators.exchange import ReplayExchange

pytestmark = pytest.mark.integration


async def test_recorded_session_replays_identically(tmp_path):
    trades = synthetic_market(["BTC/USD", "ETH/USD"], datetime(2026, 7, 1, tzinfo=UTC), minutes=5, seed=4)
    exchange = ReplayExchange(trades, speed="max")
    await exchange.start()
    path = tmp_path / "session.parquet"
    try:
        client = KrakenTradeClient(exchange.url, ["BTC/USD", "ETH/USD"])
        written = await asyncio.wait_for(
            record_trades(client, path, max_trades=len(trades), row_group=100), 60
        )
    finally:
        await exchange.stop()
    assert written == len(trades)
    key = lambda t: (t.pair, t.trade_id)  # noqa: E731
    replayed = sorted(trades_file(path), key=key)
    expected = sorted(trades, key=key)
    assert [(t.pair, t.trade_id, t.price, t.qty, t.side, t.timestamp) for t in replayed] == [
        (t.pair, t.trade_id, t.price, t.qty, t.side, t.timestamp) for t in expected
    ]
