"""Agent candles -> predictions, with the current champion of each (pair, interval, horizon).

Recent candles per pair live in a changelogged table; the champion is checked on a timer and
swapped in place when the `champion` alias moves.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from cryptopredict.ml.serving import Champion, predict_next
from cryptopredict.models import Candle
from cryptopredict.topics import registered_model_name
from streams.app import app, candles_topic, dead_letter, predictions_topic, settings

logger = logging.getLogger(__name__)

recent_candles = app.Table("recent_candles", default=list, partitions=settings.kafka.partitions)
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
        history = [*recent_candles[candle.pair], candle.model_dump(mode="json")][-keep:]
        recent_candles[candle.pair] = history
        champion = _champion_for(candle.pair)
        if champion.ref is None:
            continue
        prediction = predict_next(
            champion.model,
            champion.ref,
            [Candle.model_validate(c) for c in history],
            settings.model.lags,
            settings.model.horizon_candles,
        )
        if prediction is not None:
            await predictions_topic.send(key=candle.pair.encode(), value=prediction.to_json_bytes())
