"""Fixtures shared by the integration tests (the broker and Redis come from tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import WorkerProcess
from tests.integration.kafka_helpers import produce


def start_with_catalog(settings: Settings, start_worker) -> WorkerProcess:
    """Start a worker and publish the shop catalog; returns once every item is indexed."""
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    deadline = time.monotonic() + 60
    while worker.metric("streamrec_items_updated_total", action="added") < len(items):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    return worker


@pytest.fixture
def running(settings, start_worker) -> WorkerProcess:
    """A worker with the shop catalog published and indexed."""
    return start_with_catalog(settings, start_worker)
