"""What a pair's model inputs are computed from, read from the feature store the same way by a retrain
and by the drift check."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml.dataset import indicator_values
from cryptopredict.store.candles import read_candles, read_indicator_values
from cryptopredict.store.news import scored_sentiment_at_closes


@dataclass(frozen=True)
class StoredInputs:
    candles: pd.DataFrame
    indicators: pd.DataFrame  # indexed by window_start
    indicator_source: str  # "store", or "computed" from the candles when the store's rows do not cover them
    sentiment: pd.DataFrame | None  # None: the coin has no scored news in the candles' range


def read_stored_inputs(
    engine: Engine, pair: str, interval_s: int, config: IndicatorConfig
) -> StoredInputs | None:
    """None when the store has no candles of the pair."""
    candles = read_candles(engine, pair, interval_s)
    if candles.empty:
        return None
    stored = read_indicator_values(engine, pair, interval_s)
    values, source = indicator_values(candles, pair, interval_s, stored, config)
    sentiment = scored_sentiment_at_closes(engine, pair, candles, interval_s)
    return StoredInputs(candles, values, source, sentiment)
