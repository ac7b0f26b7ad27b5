"""Agent candles -> predictions, with the current champion of each (pair, interval, horizon).

Per pair a changelogged table keeps the recent candles and the indicator state (the same O(1) code as
the indicator agent), so the model input is built by the code that built the training dataset. The
champion is swapped in place when a model event (promotion, rollback) arrives, and a timer checks the
`champion` alias too, for a move made by hand in MLflow.
"""

from __future__ import annotations

import asyncio
import logging

import pandas as pd
from pydantic import ValidationError
from sqlalchemy import Engine

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.ml.serving import Champion, predict_next, uses_sentiment
from cryptopredict.models import Candle, ModelEvent, PredictionRefusal
from cryptopredict.sentiment.extractor import normalize_ticker
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.news import read_sentiment_features
from cryptopredict.topics import registered_model_name
from streams.app import (
    app,
    candles_topic,
    dead_letter,
    model_events_topic,
    prediction_refusals_topic,
    predictions_topic,
    settings,
)

logger = logging.getLogger(__name__)

prediction_state = app.Table("prediction_state", default=None, partitions=settings.kafka.partitions)
INDICATORS = IndicatorConfig()
champions: dict[str, Champion] = {}


def _champion_for(pair: str) -> Champion:
    name = registered_model_name(pair, settings.features.interval_s, settings.model.horizon_candles)
    if name not in champions:
        champions[name] = Champion(settings.mlflow.tracking_uri, name)
    return champions[name]


_engine: Engine | None = None


def _sentiment_at(candle: Candle) -> pd.DataFrame:
    """Point-in-time sentiment of the candle's coin at its close, as training saw it (blocking I/O)."""
    global _engine
    _engine = _engine or sync_engine(settings.postgres)
    coin = normalize_ticker(candle.pair) or candle.pair
    features = read_sentiment_features(_engine, coin, pd.DatetimeIndex([candle.window_end]))
    features.index = pd.DatetimeIndex([candle.window_start])
    return features


async def _refresh(pair: str) -> None:
    champion = _champion_for(pair)
    try:
        await asyncio.to_thread(champion.refresh)
    except Exception:  # MLflow briefly unreachable: keep serving, try again next tick
        logger.exception("champion refresh failed for %s", pair)


@app.timer(interval=settings.model.refresh_s)
async def refresh_champions() -> None:
    for pair in settings.kraken.pairs:
        await _refresh(pair)


@app.agent(model_events_topic)
async def reload_on_model_events(stream):  # type: ignore[no-untyped-def]
    async for raw in stream:
        try:
            event = ModelEvent.model_validate_json(raw)
        except ValidationError as exc:
            await dead_letter("prediction_agent", raw, f"invalid model event: {exc.errors()[0]['msg']}")
            continue
        target = (event.interval_s, event.horizon_candles)
        if event.pair in settings.kraken.pairs and target == (
            settings.features.interval_s,
            settings.model.horizon_candles,
        ):
            logger.info("model event: %s v%s %s", event.registered_model, event.champion.version, event.kind)
            await _refresh(event.pair)


@app.agent(candles_topic)
async def predict_on_candles(stream):  # type: ignore[no-untyped-def]
    keep = settings.model.lags + 1
    async for raw in stream:
        try:
            candle = Candle.model_validate_json(raw)
        except ValidationError as exc:
            await dead_letter("prediction_agent", raw, f"invalid candle: {exc.errors()[0]['msg']}")
            continue
        if candle.interval_s != settings.features.interval_s:
            continue
        stored = prediction_state.get(candle.pair)
        history = [] if stored is None else [Candle.model_validate(c) for c in stored["candles"]]
        indicators = (
            IndicatorState.new(candle.pair, candle.interval_s, INDICATORS)
            if stored is None
            else IndicatorState.model_validate(stored["indicators"])
        )
        try:
            values = indicators.update(candle).values
        except ValueError:  # a candle seen before (redelivery after a restart): already handled
            continue
        history = [*history, candle][-keep:]
        prediction_state[candle.pair] = {
            "candles": [c.model_dump(mode="json") for c in history],
            "indicators": indicators.model_dump(mode="json"),
        }
        champion = _champion_for(candle.pair)
        if champion.ref is None:
            continue
        sentiment = None
        if uses_sentiment(champion.model):
            sentiment = await asyncio.to_thread(_sentiment_at, candle)
        prediction = predict_next(
            champion.model,
            champion.ref,
            history,
            values,
            settings.model.lags,
            settings.model.horizon_candles,
            INDICATORS,
            sentiment,
        )
        if isinstance(prediction, PredictionRefusal):
            logger.info("no prediction for %s at %s: %s", candle.pair, candle.window_start, prediction.reason)
            await prediction_refusals_topic.send(key=candle.pair.encode(), value=prediction.to_json_bytes())
        else:
            await predictions_topic.send(key=candle.pair.encode(), value=prediction.to_json_bytes())
