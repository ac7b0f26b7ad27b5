"""Agent candles -> predictions, with the current champion of each (market, interval, horizon): one
prediction (or refusal) per closed candle of each forecast interval and configured horizon. A market is
a pair on one venue (topics.market_key: the pair itself on Kraken).

Per market and interval the recent candles and the indicator state (the same O(1) code as the indicator
agent) stay parsed in memory (cryptopredict.ml.live_state), with a changelogged table as their recovery
copy: written after every candle, read only when memory does not hold what the table holds (after a
restart or a hand-over). A candle is acknowledged once the broker has its forecasts and its state is
saved; meanwhile the agent goes on with the next candle (of another market: a market's candles wait for
each other). A candle built by the candle builder of this same worker is forecast as it is sent, not
once it comes back from Kafka (streams.ahead); its arrival then takes those forecasts and settles them.
The model input of each candle is computed from its floats by the formulas that built the training
dataset, without a data frame (cryptopredict.ml.serving.predict_next). The champion is swapped in place when a model event (promotion, rollback) arrives, and a timer checks the `champion`
alias too, for a move made by hand in MLflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pandas as pd
from faust.types import RecordMetadata
from pydantic import ValidationError
from sqlalchemy import Engine

from cryptopredict import metrics
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml.live_state import LiveStates
from cryptopredict.ml.pyfunc import forecast_spec
from cryptopredict.ml.serving import (
    Champion,
    ModelLoadError,
    cross_venue_window,
    history_length,
    predict_next,
    refusal,
    stale_sentiment,
    uses_sentiment,
)
from cryptopredict.models import Candle, ModelEvent, ModelRef, Prediction, PredictionRefusal
from cryptopredict.store.adaptation import adapt_interval_level
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.inputs import read_cross_venue_candles
from cryptopredict.store.news import newest_sentiment_at, sentiment_at_closes
from cryptopredict.topics import registered_model_name
from streams.ahead import MadeAhead
from streams.app import (
    app,
    candle_listeners,
    candles_topic,
    dead_letter,
    model_events_topic,
    prediction_refusals_topic,
    predictions_topic,
    settings,
    state_table,
)
from streams.guard import complete_stream
from streams.settling import Output, Settling

logger = logging.getLogger(__name__)

prediction_state = state_table("prediction_state")
INDICATORS = IndicatorConfig()
HORIZONS = settings.forecast_horizons()  # candle interval -> horizons in candles
MAX_SENTIMENT_AGE = timedelta(seconds=settings.model.max_sentiment_age_s)
HISTORY = history_length(settings.model.lags)
live_states = LiveStates(prediction_state, HISTORY, INDICATORS)
# How long a candle waits before asking an unreachable registry again.
REGISTRY_RETRY_S = 2.0
champions: dict[str, Champion] = {}
# (registered model, version) -> the coverage its intervals are drawn at now.
interval_levels: dict[tuple[str, str], float] = {}


def _state_key(market: str, interval_s: int) -> str:
    """The market alone for features.interval_s, as before further intervals were served, so an upgraded
    worker keeps its table's history; the market and interval for the others."""
    return market if interval_s == settings.features.interval_s else f"{market}@{interval_s}s"


def _champion_for(market: str, interval_s: int, horizon: int) -> Champion:
    name = registered_model_name(market, interval_s, horizon)
    if name not in champions:
        champions[name] = Champion(settings.mlflow.tracking_uri, name)
    return champions[name]


_engine: Engine | None = None


def _store() -> Engine:
    global _engine
    _engine = _engine or sync_engine(settings.postgres, settings.store.dialect)
    return _engine


async def _refresh(market: str, interval_s: int, horizon: int) -> None:
    champion = _champion_for(market, interval_s, horizon)
    try:
        if await asyncio.to_thread(champion.refresh) and champion.serving is not None:
            metrics.MODEL_LOADS.labels(champion.registered_model, "loaded").inc()
            metrics.SERVING_VERSION.labels(champion.registered_model).set(float(champion.serving.ref.version))
    except ModelLoadError as exc:
        metrics.MODEL_LOADS.labels(champion.registered_model, "failed").inc()
        # Kept on the dead letters, where a person looks for what the pipeline could not use.
        logger.error("%s", exc)
        raw = json.dumps({"registered_model": champion.registered_model, "version": champion.failed_version})
        await dead_letter("prediction_agent", raw.encode(), str(exc))
    except Exception:  # MLflow briefly unreachable: keep serving, try again next tick
        logger.exception("champion refresh failed for %s %ds h%d", market, interval_s, horizon)


@app.timer(interval=settings.model.refresh_s)
async def refresh_champions() -> None:
    for market, interval_s, horizon in settings.forecast_targets():
        await _refresh(market, interval_s, horizon)


async def _adapt(model: Any, ref: ModelRef) -> None:
    """Moves the version's interval level by its new outcomes; on a store error the last level stays."""
    coverage = forecast_spec(model).coverage
    if coverage is None or settings.model.aci_gamma == 0:
        return
    try:
        adaptation = await asyncio.to_thread(
            adapt_interval_level, _store(), ref.name, ref.version, coverage, settings.model.aci_gamma
        )
    except Exception:
        logger.exception("interval adaptation failed for %s v%s", ref.name, ref.version)
        return
    interval_levels[(ref.name, ref.version)] = adaptation.level
    metrics.INTERVAL_LEVEL.labels(ref.name).set(adaptation.level)


@app.timer(interval=settings.model.aci_every_s)
async def adapt_intervals() -> None:
    for champion in list(champions.values()):
        if champion.serving is not None:
            await _adapt(*champion.serving)


@app.agent(model_events_topic)
async def reload_on_model_events(stream):  # type: ignore[no-untyped-def]
    async for raw in stream:
        try:
            event = ModelEvent.model_validate_json(raw)
        except ValidationError as exc:
            await dead_letter("prediction_agent", raw, f"invalid model event: {exc.errors()[0]['msg']}")
            continue
        if event.pair in settings.pairs and event.horizon_candles in HORIZONS.get(event.interval_s, []):
            logger.info("model event: %s v%s %s", event.registered_model, event.champion.version, event.kind)
            await _refresh(event.pair, event.interval_s, event.horizon_candles)


_complete_candles = complete_stream("prediction_agent", candles_topic.get_topic_name())
made_ahead: MadeAhead[Candle, Output | None] = MadeAhead(
    lambda outcome: metrics.FORECASTS_AHEAD.labels(outcome).inc()
)


@app.agent(candles_topic)
async def predict_on_candles(stream):  # type: ignore[no-untyped-def]
    candles = stream.noack()  # acknowledged by `settling`, once the forecasts are out and the state saved
    settling = Settling("prediction_agent", candles)
    async for event in candles.events():
        await _complete_candles.check(event.message)
        with _complete_candles.processing():
            await settling.settle(event, await _on_candle(event.value, settling))


async def _on_candle(raw: bytes, settling: Settling) -> Output | None:
    """Sends the candle's forecasts (or takes those made ahead for it); returns them with the state to
    save once the broker has them."""
    arrived = time.perf_counter()
    try:
        candle = Candle.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter("prediction_agent", raw, f"invalid candle: {exc.errors()[0]['msg']}")
        return None
    if candle.interval_s not in HORIZONS:
        return None
    key = _state_key(candle.market, candle.interval_s)
    await settling.ready(key)
    if (made := made_ahead.take(key, candle, live_states.table.get(key))) is not None:
        try:
            return await made
        except Exception:
            logger.exception("forecasts made ahead for %s failed; making them again", key)
    return await _advance(key, candle, arrived)


async def _advance(key: str, candle: Candle, arrived: float) -> Output | None:
    """Moves the key's state on by `candle` and sends its forecasts."""
    state = live_states.advance(key, candle)
    if state is None:  # a candle seen before (redelivery after a restart): its forecasts were acknowledged
        return None

    sends = await _forecast(list(state.candles), state.values)
    metrics.PREDICTION_LATENCY.observe(time.perf_counter() - arrived)
    return Output(key, sends, lambda: live_states.save(key, state))


def _on_candle_sent(candle: Candle) -> None:
    """The candle builder of this worker sent `candle`: its forecasts start now (streams.ahead) when the
    key's state is saved, with nothing in flight, right up to the candle before, and this worker also
    predicts on the candle's partition."""
    if candle.interval_s not in HORIZONS:
        return
    key = _state_key(candle.market, candle.interval_s)
    if made_ahead.pending(key) or (base := live_states.base_for(key, candle)) is None:
        return
    if _predicts_on(candle.market):  # last: it asks the consumer for its assignment
        made_ahead.start(key, candle, base, _advance(key, candle, time.perf_counter()))


def _predicts_on(market: str) -> bool:
    """Whether the market's candles partition, as the producer picks it, is assigned to this worker."""
    partition = app.producer.key_partition(candles_topic.get_topic_name(), market.encode())
    return partition in app.consumer.assignment()


candle_listeners.append(_on_candle_sent)


async def _forecast(
    history: list[Candle], values: dict[str, float | None]
) -> list[Awaitable[RecordMetadata]]:
    """Sends the forecast of each horizon from the newest candle of `history` (or why there is none);
    returns the broker's acknowledgements to wait for."""
    candle = history[-1]
    sends: list[Awaitable[RecordMetadata]] = []
    for horizon in HORIZONS[candle.interval_s]:
        outcome = await _predict(history, values, horizon)
        if isinstance(outcome, PredictionRefusal):
            logger.info("no prediction for %s at %s: %s", candle.market, candle.window_start, outcome.reason)
            sent = await prediction_refusals_topic.send(
                key=candle.market.encode(), value=outcome.to_json_bytes()
            )
            kind = metrics.reason_kind(outcome.reason)
            metrics.PREDICTION_REFUSALS.labels(candle.market, outcome.horizon_s, kind).inc()
        elif outcome is not None:
            sent = await predictions_topic.send(key=candle.market.encode(), value=outcome.to_json_bytes())
            metrics.PREDICTIONS.labels(candle.market, outcome.horizon_s, outcome.model_version).inc()
        else:
            continue
        sends.append(sent)
    return sends


async def _predict(
    history: list[Candle], values: dict[str, float | None], horizon: int
) -> Prediction | PredictionRefusal | None:
    """The champion's forecast from the newest candle of `history`; None while there is no champion."""
    candle = history[-1]
    champion = _champion_for(candle.market, candle.interval_s, horizon)
    while not champion.checked:
        # A worker just (re)started, or the registry was away: the candle waits (in Kafka, unacknowledged)
        # until the registry says whether there is a champion, rather than go without its prediction.
        await _refresh(candle.market, candle.interval_s, horizon)
        if not champion.checked:
            await asyncio.sleep(REGISTRY_RETRY_S)
    serving = champion.serving
    if serving is None and champion.failed_version is not None:
        # The champion exists but would not load: the candle's forecast is refused visibly, not dropped.
        ref = ModelRef(name=champion.registered_model, version=champion.failed_version, alias="champion")
        return refusal(ref, candle, horizon, f"champion v{champion.failed_version} could not be loaded")
    if serving is None:
        return None
    model, ref = serving
    if (ref.name, ref.version) not in interval_levels:
        await _adapt(model, ref)  # a new champion, or a restart: its level from the store
    sentiment = None
    if uses_sentiment(model):
        newest = await asyncio.to_thread(newest_sentiment_at, _store(), candle.pair, candle.window_end)
        if reason := stale_sentiment(newest, candle.window_end, MAX_SENTIMENT_AGE):
            return refusal(ref, candle, horizon, reason)
        starts = pd.DatetimeIndex([candle.window_start])
        sentiment = await asyncio.to_thread(
            sentiment_at_closes, _store(), candle.pair, starts, candle.interval_s
        )
    cross_venue = None
    markets, start, end = cross_venue_window(model, candle, settings.venue_pairs)
    if markets:
        cross_venue = await asyncio.to_thread(
            read_cross_venue_candles, _store(), markets, candle.interval_s, start, end
        )
    return predict_next(
        model,
        ref,
        history,
        values,
        settings.model.lags,
        horizon,
        INDICATORS,
        sentiment,
        cross_venue=cross_venue,
        quantile_levels=settings.model.quantile_levels,
        interval_level=interval_levels.get((ref.name, ref.version)),
    )
