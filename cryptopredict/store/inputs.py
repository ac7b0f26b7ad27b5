"""What a pair's model inputs are computed from, read from the feature store the same way by a retrain
and by the drift check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml.dataset import indicator_values
from cryptopredict.store.candles import read_candles, read_indicator_values
from cryptopredict.store.news import scored_sentiment_at_closes
from cryptopredict.store.report import read_candles_between


@dataclass(frozen=True)
class StoredInputs:
    candles: pd.DataFrame
    indicators: pd.DataFrame  # indexed by window_start
    indicator_source: str  # "store", or "computed" from the candles when the store's rows do not cover them
    sentiment: pd.DataFrame | None  # None: the coin has no scored news in the candles' range
    # Exchange -> the candles of the coin on that venue (cryptopredict.features.cross_venue); None: not asked.
    cross_venue: dict[str, pd.DataFrame] | None = None


def read_stored_inputs(
    engine: Engine,
    pair: str,
    interval_s: int,
    config: IndicatorConfig,
    cross_venue: Mapping[str, str] | None = None,
) -> StoredInputs | None:
    """None when the store has no candles of the pair. `cross_venue`: exchange -> the market of the
    coin there (TrainingInput.cross_venue), whose candles are read too."""
    candles = read_candles(engine, pair, interval_s)
    if candles.empty:
        return None
    stored = read_indicator_values(engine, pair, interval_s)
    values, source = indicator_values(candles, pair, interval_s, stored, config)
    sentiment = scored_sentiment_at_closes(engine, pair, candles, interval_s)
    others = None if cross_venue is None else read_cross_venue_candles(engine, cross_venue, interval_s)
    return StoredInputs(candles, values, source, sentiment, others)


def read_cross_venue_candles(
    engine: Engine,
    markets: Mapping[str, str],
    interval_s: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, pd.DataFrame]:
    """Exchange -> the candles of its market in `markets`: all of them, or with start <= window_start
    < end (the live row's window: the prediction agent reads the few candles it needs, not the history)."""
    if start is None or end is None:
        return {exchange: read_candles(engine, market, interval_s) for exchange, market in markets.items()}
    return {
        exchange: read_candles_between(engine, market, interval_s, start, end)
        for exchange, market in markets.items()
    }
