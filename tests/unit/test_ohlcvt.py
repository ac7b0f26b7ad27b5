from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise

import pytest

from cryptopredict.store.ohlcvt import read_ohlcvt

pytestmark = pytest.mark.unit


def test_missing_hours_become_gap_candles(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("3600,10,12,9,11,2.5,4\n14400,11,11,10,10.5,1,1\n")
    candles = list(read_ohlcvt(path, "BTC/USD", 3600))
    assert [c.window_start for c in candles] == [datetime(1970, 1, 1, h, tzinfo=UTC) for h in (1, 2, 3, 4)]
    assert [c.gap for c in candles] == [False, True, True, False]
    assert candles[1].close == 11 and candles[1].volume == 0
    assert candles[0].trade_count == 4 and candles[0].window_end - candles[0].window_start == timedelta(
        hours=1
    )


@pytest.mark.realdata
def test_real_export_loads_with_its_gaps(shared_data):
    candles = list(islice(read_ohlcvt(shared_data / "kraken" / "XBTUSD_60.csv", "BTC/USD", 3600), 5000))
    assert all(b.window_start - a.window_start == timedelta(hours=1) for a, b in pairwise(candles))
    assert any(c.gap for c in candles)
