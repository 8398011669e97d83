"""Two workers in one consumer group share the partitions; every event is answered."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from tests import shop
from tests.conftest import free_port
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration


def test_two_workers_split_the_partitions_and_answer_every_event(settings, start_worker):
    asyncio.run(ensure_topics(settings))
    first = start_worker(settings, "first")
    second = start_worker(settings.model_copy(update={"metrics_port": free_port()}), "second")
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    # Both workers index every item: the catalog is shared through Redis.
    deadline = time.monotonic() + 30
    while min(w.metric("streamrec_index_items") for w in (first, second)) < len(items):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # Probe until the group has rebalanced and each worker owns a partition.
    probes = 0
    deadline = time.monotonic() + 90
    while (
        min(w.metric("streamrec_events_consumed_total", type="click") for w in (first, second)) == 0
    ):
        assert time.monotonic() < deadline, first.log() + second.log()
        produce(
            settings,
            settings.topic_events,
            [event(f"p{probes + n}", f"probe-{probes + n}", "books-0", "click") for n in range(10)],
        )
        probes += 10
        time.sleep(1.0)

    events = [event(f"s{n}", f"user-{n % 40}", f"books-{n % 25}") for n in range(200)]
    produce(settings, settings.topic_events, events)
    got = Collector(settings, settings.topic_recommendations).by_trigger(
        *[f"s{n}" for n in range(200)], timeout=120
    )
    assert len(got) == 200
    consumed = [w.metric("streamrec_events_consumed_total", type="view") for w in (first, second)]
    assert all(c > 0 for c in consumed), consumed  # both took a share of the partitions
    assert sum(consumed) >= 200
