"""The launcher's services answer real requests, and a second `up` changes nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from cryptopredict import stack
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.settings import Settings

pytestmark = pytest.mark.integration


async def test_kafka_round_trip(settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().bytes
    producer = AIOKafkaProducer(**client_kwargs(settings.kafka))
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **client_kwargs(settings.kafka), auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await consumer.getone()
    finally:
        await consumer.stop()
    assert message.value == payload


async def test_kafka_app_topics_exist(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from cryptopredict.topics import ALL_TOPICS

    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        topics = await admin.describe_topics(list(ALL_TOPICS))
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in topics}
    assert partitions == dict.fromkeys(ALL_TOPICS, settings.kafka.partitions)


async def test_temporal_describes_namespace(settings: Settings) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from cryptopredict.temporal_connect import connect_temporal

    client = await connect_temporal(settings.temporal)
    response = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=settings.temporal.namespace)
    )
    assert response.namespace_info.name == settings.temporal.namespace


@pytest.mark.parametrize("which", ["features", "mlflow"])
async def test_postgres_databases_answer(settings: Settings, which: str) -> None:
    import asyncpg

    pg = settings.postgres
    database = pg.database if which == "features" else pg.mlflow_database
    conn = await asyncpg.connect(pg.url_for(database))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == database
    finally:
        await conn.close()


def test_mlflow_creates_experiment(settings: Settings) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    assert client.get_experiment(experiment_id).name == name
    client.delete_experiment(experiment_id)


async def test_llm_chat_completion(settings: Settings) -> None:
    llm = settings.llm
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{llm.base_url.rstrip('/')}/chat/completions",
            headers={"Authorization": f"Bearer {llm.api_key.get_secret_value()}"},
            json={
                "model": llm.model,
                "messages": [{"role": "user", "content": "Say hello in one word."}],
                "max_tokens": 16,
                "temperature": 0,
            },
        )
    response.raise_for_status()
    text = response.json()["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()


def test_second_up_is_idempotent(settings: Settings) -> None:
    # Compared with just before, not with the session's start: the drills restart components on purpose.
    before = stack.status(settings)
    again = stack.up(settings)
    assert {s.name: s.pid for s in again} == {s.name: s.pid for s in before}
    assert all(s.healthy for s in again)


def test_status_reports_all_healthy(settings: Settings) -> None:
    statuses = stack.status(settings)
    assert [s.name for s in statuses] == list(stack.build_components(settings))
    unhealthy = {s.name: s.detail for s in statuses if not s.healthy}
    assert not unhealthy
    for s in statuses:
        if s.managed:
            assert s.pid is not None and s.rss_bytes
            assert stack.logs_path(settings, s.name).exists()
