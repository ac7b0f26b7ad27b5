"""`cryptopredict clean NAMESPACE`: what a demo or test run left behind in its namespace, listed, and removed
with --yes: topics, store rows, registered models, Optuna studies and Temporal schedules. Nothing outside
the namespace is touched: every name it matches carries the namespace (the scheme in cryptopredict/topics.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptopredict.settings import Settings
from cryptopredict.topics import in_namespace, namespace_topic_prefix, registered_model_prefix


async def clean_namespace(settings: Settings, namespace: str, *, dry_run: bool) -> dict[str, Any]:
    """What is (or was, unless `dry_run`) in `namespace`, by kind."""
    settings.in_namespace(namespace)  # refuses a name that is not a namespace
    return {
        "topics": await _topics(settings, namespace, dry_run),
        "store_rows": await asyncio.to_thread(_store_rows, settings, namespace, dry_run),
        "registered_models": await asyncio.to_thread(_registered_models, settings, namespace, dry_run),
        "optuna_studies": await asyncio.to_thread(_optuna_studies, settings, namespace, dry_run),
        "schedules": await _schedules(settings, namespace, dry_run),
    }


async def _topics(settings: Settings, namespace: str, dry_run: bool) -> list[str]:
    from cryptopredict.kafka_admin import delete_topics, topic_names

    names = sorted(
        t for t in await topic_names(settings.kafka) if t.startswith(namespace_topic_prefix(namespace))
    )
    if names and not dry_run:
        await delete_topics(settings.kafka, names)
    return names


def _store_rows(settings: Settings, namespace: str, dry_run: bool) -> dict[str, int] | str:
    from cryptopredict.store.candles import sync_engine
    from cryptopredict.store.namespace import remove_namespace_rows

    if settings.store.dialect == "risingwave":
        # Demo and test namespaces run on the local stack's PostgreSQL; RisingWave's tables follow its topics.
        return "not on RisingWave: its tables ingest the namespace's topics, removed above"
    engine = sync_engine(settings.postgres)
    try:
        return remove_namespace_rows(engine, namespace, dry_run=dry_run)
    finally:
        engine.dispose()


def _registered_models(settings: Settings, namespace: str, dry_run: bool) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow.tracking_uri)
    found = client.search_registered_models(
        filter_string=f"name LIKE '{registered_model_prefix(namespace)}%'"
    )
    names = sorted(model.name for model in found if in_namespace(model.name, namespace))
    if not dry_run:
        for name in names:
            client.delete_registered_model(name)
    return names


def _optuna_studies(settings: Settings, namespace: str, dry_run: bool) -> list[str]:
    import optuna

    storage = settings.postgres.optuna_storage_url
    names = sorted(n for n in optuna.get_all_study_names(storage) if in_namespace(n, namespace))
    if not dry_run:
        for name in names:
            optuna.delete_study(study_name=name, storage=storage)
    return names


async def _schedules(settings: Settings, namespace: str, dry_run: bool) -> list[str]:
    from cryptopredict.orchestration import temporal_client

    client = await temporal_client(settings)
    ids = sorted([s.id async for s in await client.list_schedules() if in_namespace(s.id, namespace)])
    if not dry_run:
        for schedule_id in ids:
            await client.get_schedule_handle(schedule_id).delete()
    return ids
