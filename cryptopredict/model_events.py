"""Moving a champion and telling the prediction path: model events on topic `model_events`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cryptopredict.models import ModelEvent
from cryptopredict.publisher import publish_records
from cryptopredict.settings import Settings
from cryptopredict.topics import MODEL_EVENTS, registered_model_name, topic_name


async def publish_model_event(settings: Settings, event: ModelEvent) -> None:
    topic = topic_name(MODEL_EVENTS, settings.kafka.topic_prefix)
    record = (event.registered_model.encode(), event.to_json_bytes())
    await publish_records(settings.kafka, topic, [record])


async def rollback_champion(
    settings: Settings, pair: str, interval_s: int, horizon_candles: int, expected: str | None = None
) -> ModelEvent:
    """Moves `champion` back to the version that held it before the current one (with `expected`: the
    rollback of that champion, done once however often it is asked), and publishes it. Raises ValueError
    when there is no earlier champion or the champion is not `expected`."""
    import mlflow

    from cryptopredict.ml import registry

    name = registered_model_name(pair, interval_s, horizon_candles)
    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    from_version, _ = await asyncio.to_thread(registry.rollback, client, name, expected)
    champion = await asyncio.to_thread(registry.current_champion, client, name)
    assert champion is not None
    event = ModelEvent(
        registered_model=name,
        pair=pair,
        interval_s=interval_s,
        horizon_candles=horizon_candles,
        champion=registry.model_ref(champion, registry.CHAMPION),
        previous_version=from_version,
        kind="rolled_back",
        reason=f"rollback from v{from_version} by a person",
        at=datetime.now(UTC),
    )
    await publish_model_event(settings, event)
    return event
