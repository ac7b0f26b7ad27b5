"""Our candle code on every real Kraken trade of one hour, against Kraken's own hourly candle."""

import csv
from datetime import UTC, datetime

import pytest

from cryptopredict.features.candles import CandleState
from cryptopredict.kraken.sources import csv_trades

pytestmark = [pytest.mark.realdata, pytest.mark.unit]

HOUR = datetime(2019, 7, 1, tzinfo=UTC)


def test_hourly_candle_matches_krakens_ohlcvt(shared_data):
    trades = list(csv_trades(shared_data / "kraken" / "BTCUSD_trades_2019-07-01T00.csv", "BTC/USD"))
    state = CandleState(pair="BTC/USD", interval_s=3600, grace_s=0)
    for trade in trades:
        assert state.add_trade(trade) == ([], "accepted")
    (candle,) = state.close_idle(datetime(2019, 7, 1, 2, tzinfo=UTC))
    with (shared_data / "kraken" / "XBTUSD_60.csv").open() as handle:
        row = next(r for r in csv.reader(handle) if int(r[0]) == int(HOUR.timestamp()))
    kraken_open, kraken_high, kraken_low, kraken_close, kraken_volume = map(float, row[1:6])
    assert (candle.open, candle.high, candle.low, candle.close) == (
        kraken_open,
        kraken_high,
        kraken_low,
        kraken_close,
    )
    # The trade file holds one trade (0.047 BTC) more than Kraken's export counts for that hour.
    assert abs(candle.trade_count - int(row[6])) <= 1
    assert candle.volume == pytest.approx(kraken_volume, rel=1e-4)
