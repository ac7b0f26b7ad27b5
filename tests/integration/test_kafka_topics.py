"""Topic configuration on the real broker: changelogs made before a setting existed get it at start."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from cryptopredict.kafka_admin import _set_on_topic, _wait_for_leaders, ensure_topic_config
from cryptopredict.kafka_client import client_kwargs
from streams.app import CHANGELOG_CONFIG

pytestmark = pytest.mark.integration


async def topic_config(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    ((_code, _message, _type, _name, entries),) = response.resources
    return {entry[0]: entry[1] for entry in entries if _set_on_topic(entry[3])}


async def test_an_existing_changelog_gets_the_settings_and_keeps_its_own(settings):
    name = f"it-{uuid.uuid4().hex[:8]}-table-changelog"
    admin = AIOKafkaAdminClient(**client_kwargs(settings.kafka))
    await admin.start()
    try:
        # As Faust made changelogs before: compacted, 1 GB segments, plus a setting of the operator's.
        await admin.create_topics(
            [
                NewTopic(
                    name, 1, 1, topic_configs={"cleanup.policy": "compact", "retention.bytes": "123456789"}
                )
            ]
        )
        await _wait_for_leaders(admin, [name])  # a changelog made before is long settled
        missing = f"it-{uuid.uuid4().hex[:8]}-not-made"
        assert await ensure_topic_config(settings.kafka, [name, missing], CHANGELOG_CONFIG) == [name]
        assert await topic_config(admin, name) == CHANGELOG_CONFIG | {"retention.bytes": "123456789"}
        assert await ensure_topic_config(settings.kafka, [name], CHANGELOG_CONFIG) == []  # nothing to change
        assert missing not in await admin.list_topics()
    finally:
        await admin.delete_topics([name])
        await admin.close()
