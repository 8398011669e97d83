"""A worker that joins with an empty Redis reads the catalog topic before it processes an
event (issue 24): events preloaded for catalog items are never dead-lettered as
``unknown_item``, while an event for an item the catalog really lacks still is.

Against the real broker and redis-server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.request

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import WorkerProcess
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration

EVENTS = 3000
#: Each item is published this many times (prices change): a catalog topic of 1,500
#: messages, the size of a small real catalog, and only each item's last version counts.
VERSIONS = 15


async def _create_compacted(settings: Settings, topic: str, partitions: int) -> None:
    """An items topic made by the operator, with more partitions than the worker's one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


def _total(worker: WorkerProcess, name: str) -> float:
    """The sum of every series of ``name`` (a counter's labels summed up)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(worker.metrics())
        for sample in family.samples
        if sample.name == name
    )


def _readyz(port: int) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_worker_joining_with_an_empty_redis_reads_the_catalog_before_any_event(
    settings, start_worker
):
    settings = settings.model_copy(update={"topic_partitions": 4})
    asyncio.run(_create_compacted(settings, settings.topic_items, partitions=3))
    asyncio.run(ensure_topics(settings))
    items = catalog_items(shop.catalog())
    versions = [
        (i.item_id.encode(), encode_item(dataclasses.replace(i, price=float(v))))
        for v in range(VERSIONS)
        for i in items
    ]
    produce(settings, settings.topic_items, versions)
    ids = [i.item_id for i in items]
    events = [event(f"e{n}", f"user-{n % 300}", ids[n % len(ids)]) for n in range(EVENTS)]
    events.insert(EVENTS // 2, event("missing", "user-0", "not-in-the-catalog"))
    produce(settings, settings.topic_events, events)

    worker = start_worker(settings)  # Redis is empty: the fixture flushed it
    deadline = time.monotonic() + 120
    while (
        worker.metric("streamrec_recommendations_published_total")
        + _total(worker, "streamrec_dlq_events_total")
        < EVENTS + 1
    ):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.5)
    assert worker.metric("streamrec_dlq_events_total", reason="unknown_item") == 1
    got = Collector(settings, settings.topic_recommendations).by_trigger(
        *[f"e{n}" for n in range(EVENTS)], timeout=30
    )
    assert len(got) == EVENTS

    dead = Collector(settings, settings.topic_dlq).wait_for(lambda r: len(r) >= 1, timeout=30)
    assert [(d["reason"], json.loads(d["original_text"])["event_id"]) for d in dead] == [
        ("unknown_item", "missing")
    ]
    assert worker.metric("streamrec_catalog_ready") == 1
    status, body = _readyz(settings.metrics_port)
    assert status == 200, body
    assert "caught up" in worker.log()

    async def stored_prices() -> set[float | None]:
        store = RedisStore.from_settings(settings)
        try:
            snapshot, _ = await store.catalog_snapshot()
        finally:
            await store.close()
        return {i.price for i in snapshot}

    # The last version of every item, not an earlier one.
    assert asyncio.run(stored_prices()) == {float(VERSIONS - 1)}


def test_an_empty_catalog_topic_does_not_hold_the_worker(settings, start_worker):
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)
    deadline = time.monotonic() + 30
    while _readyz(settings.metrics_port)[0] != 200:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert worker.metric("streamrec_catalog_ready") == 1
    while "the catalog is empty" not in worker.log():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
