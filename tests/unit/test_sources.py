"""Trade sources of the replay exchange: OHLCVT candles rebuilt exactly from synthesised trades, files
of real trades, and a seeded synthetic market with clustered volatility and bursts of trades."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptopredict.features.candles import CandleState
from cryptopredict.kraken.rest import ohlc_response, parse_ohlc_response
from cryptopredict.kraken.sources import (
    DEFAULT_SPECS,
    OhlcvtRow,
    _exact_split,
    candle_trades,
    csv_trades,
    ohlcvt_trades,
    read_ohlcvt,
    synthetic_market,
    synthetic_trades,
    trades_file,
)
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import ohlc_rows, parse_since_ns, result_key

pytestmark = pytest.mark.unit

START = datetime(2026, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def rebuild(trades: list[Trade], interval_s: int) -> dict[datetime, object]:
    state = CandleState(pair=trades[0].pair, interval_s=interval_s, grace_s=0)
    candles = [c for t in trades for c in state.add_trade(t)[0]] + state.close_idle(FAR_FUTURE)
    return {c.window_start: c for c in candles if not c.gap}


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 15, tzinfo=UTC)),  # quiet: 1-118 trades
        (datetime(2019, 7, 1, tzinfo=UTC), datetime(2019, 7, 3, tzinfo=UTC)),  # busy: ~1000 trades
    ],
)
def test_ohlcvt_trades_rebuild_the_file_candles_exactly(shared_data, start, end):
    path = shared_data / "kraken" / "XBTUSD_60.csv"
    rows = list(read_ohlcvt(path, start, end))
    trades = list(ohlcvt_trades(path, "BTC/USD", start=start, end=end))
    candles = rebuild(trades, 3600)

    assert len(rows) >= 40 and len(candles) == len(rows)
    for row in rows:
        candle = candles[datetime.fromtimestamp(row.time, tz=UTC)]
        assert (candle.open, candle.high, candle.low, candle.close) == (
            row.open,
            row.high,
            row.low,
            row.close,
        )
        assert candle.volume == row.volume  # exactly, not approximately
        assert candle.trade_count >= row.trades
        if row.trades >= 4:
            assert candle.trade_count == row.trades
    ids = [t.trade_id for t in trades]
    assert ids == list(range(1, len(trades) + 1))
    assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(trades))


@pytest.mark.realdata
def test_a_few_hundred_real_candles_in_one_go(shared_data):
    path = shared_data / "kraken" / "XBTUSD_60.csv"
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 21, tzinfo=UTC)
    rows = list(read_ohlcvt(path, start, end))
    candles = rebuild(list(ohlcvt_trades(path, "BTC/USD", start=start, end=end, seed=11)), 3600)
    assert len(rows) >= 300
    assert [(c.open, c.high, c.low, c.close, c.volume) for c in candles.values()] == [
        (r.open, r.high, r.low, r.close, r.volume) for r in rows
    ]


def test_candle_trades_stay_inside_the_window_and_start_at_open_and_end_at_close():
    rng = random.Random(1)
    for trades_column in (1, 2, 3, 4, 7, 500):
        row = OhlcvtRow(
            1_700_000_000 - 1_700_000_000 % 3600, 100.5, 103.25, 99.0, 101.0, 12.34567891, trades_column
        )
        trades = candle_trades(row, "BTC/USD", 3600, 1, rng)
        window = datetime.fromtimestamp(row.time, tz=UTC)
        assert all(window <= t.timestamp < window + timedelta(hours=1) for t in trades)
        assert trades[0].price == row.open and trades[-1].price == row.close
        assert max(t.price for t in trades) == row.high and min(t.price for t in trades) == row.low
        assert len(trades) == max(trades_column, 4)  # O, H, L, C all differ here
        assert sum(t.qty for t in trades) == row.volume


def test_exact_split_sums_to_the_volume_in_any_order():
    rng = random.Random(3)
    for _ in range(300):
        volume = 10 ** rng.uniform(-5, 4)
        parts = _exact_split(volume, rng.randint(1, 2000), rng)
        assert all(p > 0 for p in parts)
        assert sum(parts) == volume and sum(reversed(parts)) == volume


@pytest.mark.realdata
def test_csv_trades_file(shared_data):
    path = shared_data / "kraken" / "BTCUSD_trades_2019-07-01T00.csv"
    trades = trades_file(path, "BTC/USD")
    assert len(trades) == 2672
    assert trades == list(csv_trades(path, "BTC/USD"))
    assert [t.trade_id for t in trades] == list(range(1, 2673))


def test_parquet_as_a_recorder_writes_it_round_trips(tmp_path):
    trades = synthetic_market(["BTC/USD", "ETH/USD"], START, 5, seed=2)
    path = tmp_path / "recorded.parquet"
    pq.write_table(pa.Table.from_pylist([t.model_dump() for t in trades]), path)
    assert trades_file(path) == trades


def test_parquet_without_ids_numbers_each_pair_in_time_order(tmp_path):
    path = tmp_path / "plain.parquet"
    table = {
        "time_ms": [3000, 1000, 2000, 1500],
        "side": ["b", "s", "buy", "sell"],
        "price": [10.0, 11.0, 12.0, 13.0],
        "qty": [1.0, 2.0, 3.0, 4.0],
        "pair": ["ETH/USD", "BTC/USD", "BTC/USD", "ETH/USD"],
    }
    pq.write_table(pa.table(table), path)
    trades = trades_file(path)
    assert [(t.pair, t.trade_id, t.price) for t in trades] == [
        ("BTC/USD", 1, 11.0),
        ("ETH/USD", 1, 13.0),
        ("BTC/USD", 2, 12.0),
        ("ETH/USD", 2, 10.0),
    ]
    assert [t.side for t in trades] == ["sell", "sell", "buy", "buy"]


def test_synthetic_market_is_reproducible_by_seed_with_per_pair_ids():
    pairs = ["BTC/USD", "ETH/USD", "SOL/USD"]
    market = synthetic_market(pairs, START, 30, seed=5)
    assert market == synthetic_market(pairs, START, 30, seed=5)
    assert market != synthetic_market(pairs, START, 30, seed=6)
    assert {t.pair for t in market} == set(pairs)
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(market))
    for pair in pairs:
        book = [t for t in market if t.pair == pair]
        assert [t.trade_id for t in book] == list(range(1, len(book) + 1))
        tick = DEFAULT_SPECS[pair].tick
        assert all(math.isclose(t.price / tick, round(t.price / tick), abs_tol=1e-6) for t in book)
        assert all(START <= t.timestamp < START + timedelta(minutes=30) for t in book)


def minute_closes(book: list[Trade]) -> np.ndarray:
    closes: dict[int, float] = {}
    for t in book:
        closes[int((t.timestamp - START).total_seconds() // 60)] = t.price
    return np.array([closes[m] for m in sorted(closes)])


def abs_return_acf(book: list[Trade]) -> float:
    """Mean autocorrelation (lags 1-5) of absolute 1-minute log returns."""
    r = np.abs(np.diff(np.log(minute_closes(book))))
    return float(np.mean([np.corrcoef(r[:-k], r[k:])[0, 1] for k in range(1, 6)]))


def test_synthetic_market_clusters_volatility_and_trades():
    books = [synthetic_market(["BTC/USD"], START, 1200, seed=seed) for seed in (7, 8, 9)]
    walks = [list(synthetic_trades("BTC/USD", START, 1200, seed=seed)) for seed in (7, 8, 9)]
    # Measured: this market gives 0.10-0.20 per seed; the plain random walk -0.01-0.06 per seed.
    market_acf = np.mean([abs_return_acf(b) for b in books])
    assert market_acf > 0.1
    assert market_acf > np.mean([abs_return_acf(w) for w in walks]) + 0.05
    book = books[0]
    counts = np.bincount([int((t.timestamp - START).total_seconds() // 60) for t in book])
    assert counts.var() / counts.mean() > 2  # bursts: far more dispersed than Poisson (ratio 1)
    assert 15 < counts.mean() < 25  # the long-run rate is about trades_per_minute (20)
    assert np.median([t.qty for t in book]) == pytest.approx(math.exp(-3), rel=0.1)  # lognormal sizes


def test_legacy_synthetic_trades_signature():
    trades = list(synthetic_trades("BTC/USD", START, minutes=3, trades_per_minute=60, seed=1))
    assert 120 < len(trades) < 240
    assert [t.trade_id for t in trades] == list(range(1, len(trades) + 1))


def test_ohlc_rows_and_response_round_trip():
    trades = synthetic_market(["BTC/USD"], START, 10, seed=1)
    now = int(trades[-1].timestamp.timestamp())
    rows = ohlc_rows(trades, 60, now, 0)
    assert len(rows) == 10 and rows[-1].time == now // 60 * 60
    assert sum(r.count for r in rows) == len(trades)
    parsed, last = parse_ohlc_response(ohlc_response("XXBTZUSD", rows, rows[-2].time))
    assert last == rows[-2].time
    assert [(r.time, r.open, r.close, r.count) for r in parsed] == [
        (r.time, r.open, r.close, r.count) for r in rows
    ]


def test_rest_names_and_since():
    assert result_key("BTC/USD") == "XXBTZUSD" and result_key("SOL/USD") == "SOLUSD"
    assert parse_since_ns("1561939203") == 1561939203 * 10**9
    assert parse_since_ns("1561939203.5") == 1561939203_500_000_000
    assert parse_since_ns("1561939203172000000") == 1561939203172000000
