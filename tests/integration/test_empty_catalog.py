"""A worker that would start with no catalog (every event dead-lettered as unknown_item)
says so at start, naming the items topic and the command that publishes a catalog; one
with a catalog to read, in Redis or still on the topic, says nothing about it.

Against the real broker and redis-server.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.service import empty_catalog_warning, unread_messages
from tests import shop
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration

COMMAND = "streamrec replay --catalog PATH --catalog-only"


def _publish_catalog_to_topic(settings: Settings) -> int:
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    return len(items)


def _commit_to_the_end(settings: Settings, topic: str) -> None:
    """Commit the worker group's offsets at the end of ``topic``, as a worker that has
    consumed it does."""

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.app_id,
            enable_auto_commit=False,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        await consumer.start()
        try:
            [described] = await admin.describe_topics([topic])
            partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.commit(ends)
        finally:
            await consumer.stop()
            await admin.close()

    asyncio.run(run())


def test_a_worker_started_without_a_catalog_warns_with_the_topic_and_the_command(
    settings, start_worker
):
    worker = start_worker(settings)  # returns once its metrics answer, after the check
    deadline = time.monotonic() + 30
    while "the catalog is empty" not in worker.log():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    [line] = [line for line in worker.log().splitlines() if "the catalog is empty" in line]
    assert " WARNING " in line
    assert repr(settings.topic_items) in line
    assert "unknown_item" in line
    assert COMMAND in line


def test_no_warning_while_the_items_topic_holds_a_catalog_the_worker_has_not_read(settings):
    asyncio.run(ensure_topics(settings))
    published = _publish_catalog_to_topic(settings)
    assert asyncio.run(unread_messages(settings, settings.topic_items)) == published
    assert asyncio.run(empty_catalog_warning(settings)) is None


def test_no_warning_when_redis_holds_the_catalog(settings):
    asyncio.run(ensure_topics(settings))  # the topic stays empty

    async def put() -> None:
        store = RedisStore.from_settings(settings)
        await store.put_items(catalog_items(shop.catalog()))
        await store.close()

    asyncio.run(put())
    assert asyncio.run(empty_catalog_warning(settings)) is None


def test_a_catalog_the_group_consumed_but_redis_lost_is_reported_as_empty(settings):
    """Redis flushed after the workers had read the topic: they would not read it again."""
    asyncio.run(ensure_topics(settings))
    _publish_catalog_to_topic(settings)
    _commit_to_the_end(settings, settings.topic_items)
    assert asyncio.run(unread_messages(settings, settings.topic_items)) == 0
    warning = asyncio.run(empty_catalog_warning(settings))
    assert warning is not None
    assert COMMAND in warning
