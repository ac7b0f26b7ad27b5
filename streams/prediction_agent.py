"""Agent candles -> predictions, with the current champion of each (pair, interval, horizon).

Per pair a changelogged table keeps the recent candles and the indicator state (the same O(1) code as
the indicator agent), so the model input is built by the code that built the training dataset. The
champion is checked on a timer and swapped in place when the `champion` alias moves.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.ml.serving import Champion, predict_next
from cryptopredict.models import Candle
from cryptopredict.topics import registered_model_name
from streams.app import app, candles_topic, dead_letter, predictions_topic, settings

logger = logging.getLogger(__name__)

prediction_state = app.Table("prediction_state", default=None, partitions=settings.kafka.partitions)
INDICATORS = IndicatorConfig()
champions: dict[str, Champion] = {}


def _champion_for(pair: str) -> Champion:
    name = registered_model_name(pair, settings.features.interval_s, settings.model.horizon_candles)
    if name not in champions:
        champions[name] = Champion(settings.mlflow.tracking_uri, name)
    return champions[name]


@app.timer(interval=settings.model.refresh_s)
async def refresh_champions() -> None:
    for pair in settings.kraken.pairs:
        champion = _champion_for(pair)
        try:
            await asyncio.to_thread(champion.refresh)
        except Exception:  # MLflow briefly unreachable: keep serving, try again next tick
            logger.exception("champion refresh failed for %s", pair)


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
        prediction = predict_next(
            champion.model,
            champion.ref,
            history,
            values,
            settings.model.lags,
            settings.model.horizon_candles,
            INDICATORS,
        )
        if prediction is not None:
            await predictions_topic.send(key=candle.pair.encode(), value=prediction.to_json_bytes())
