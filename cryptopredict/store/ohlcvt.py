"""Kraken OHLCVT exports (`unix_seconds,open,high,low,close,volume,trades`, no header) as candles.

Hours without trades are missing from the export; they become gap candles, as the live candle agent
records them, so training can refuse to use them. The export has no VWAP: the typical price
(high + low + close) / 3 stands in, and only for rows that had trades.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptopredict.features.candles import gap_candle
from cryptopredict.models import Candle
from cryptopredict.topics import split_market


def read_ohlcvt(path: Path, market: str, interval_s: int) -> Iterator[Candle]:
    """Candles of `market` (a market key: the pair itself on Kraken, `coinbase:BTC/USD` elsewhere)."""
    exchange, pair = split_market(market)
    step = timedelta(seconds=interval_s)
    previous: Candle | None = None
    with path.open() as handle:
        for row in csv.reader(handle):
            if not row:
                continue
            start = datetime.fromtimestamp(int(row[0]), tz=UTC)
            open_, high, low, close, volume = map(float, row[1:6])
            if previous is not None:
                gap_start = previous.window_start + step
                while gap_start < start:
                    yield gap_candle(market, interval_s, gap_start, previous.close)
                    gap_start += step
            previous = Candle(
                exchange=exchange,
                pair=pair,
                interval_s=interval_s,
                window_start=start,
                window_end=start + step,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume,
                vwap=(high + low + close) / 3,
                trade_count=int(row[6]),
            )
            yield previous
