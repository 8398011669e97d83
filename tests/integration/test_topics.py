"""Topic creation against the real broker: what is created, and a refusal that says why."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.stream.kafka_io import TopicCreationError, ensure_topics
from streamrec.stream.settings import Settings
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


async def replicas_and_partitions(settings: Settings, topic: str) -> tuple[set[int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described["partitions"]
    return {len(p["replicas"]) for p in partitions}, len(partitions)


def test_missing_topics_are_created_once_with_replicas_the_cluster_can_hold(settings):
    created = asyncio.run(ensure_topics(settings))
    assert settings.topic_events in created
    assert settings.topic_recommendations in created
    replicas, partitions = asyncio.run(replicas_and_partitions(settings, settings.topic_events))
    assert replicas == {1}  # the local cluster has one broker
    assert partitions == settings.topic_partitions
    assert asyncio.run(ensure_topics(settings)) == []


def test_a_topic_the_cluster_refuses_stops_with_the_brokers_reason(settings):
    three = settings.model_copy(update={"topic_replication_factor": 3})
    with pytest.raises(TopicCreationError, match="InvalidReplicationFactorError") as refused:
        asyncio.run(ensure_topics(three))
    assert "only 1 broker" in str(refused.value)
    assert settings.topic_events in str(refused.value)

    cli = run_cli(three, "topics")
    assert cli.returncode != 0
    assert "Kafka refused to create topic" in cli.stderr
    assert "STREAMREC_TOPIC_REPLICATION_FACTOR" in cli.stderr
    assert "Traceback" not in cli.stderr
