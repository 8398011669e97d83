"""Secrets and user ids stay out of logs; a password-protected Redis works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from stream.contracts import encode_item
from stream.kafka_io import ensure_topics
from stream.local_infra import start_redis
from stream.replay import catalog_items, wait_for_catalog
from tests import shop
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-Pa55word"  # noqa: S105 - test fixture


@pytest.fixture
def protected_redis(tmp_path: Path):
    service = start_redis(tmp_path / "redis", {"REDIS_PASSWORD": PASSWORD})
    yield service
    service.stop()


def test_a_wrong_redis_password_is_refused(protected_redis):
    wrong = protected_redis.address.replace(PASSWORD, "nope")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(wrong).ping()
    assert redis.Redis.from_url(protected_redis.address).ping()


def test_worker_uses_redis_password_and_logs_no_secret_or_user_id(
    settings, protected_redis, start_worker
):
    settings = settings.model_copy(update={"redis_url": SecretStr(protected_redis.address)})
    assert PASSWORD in settings.redis_url.get_secret_value()
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)  # default log level: INFO
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    users = ["alice-private-17", "bob-private-42"]
    produce(settings, settings.topic_events, [event("p1", users[0], "running-1")])
    produce(settings, settings.topic_events, [event("p2", users[1], "no-such-item")])  # DLQ path
    produce(settings, settings.topic_events, [event("p3", users[1], "books-1")])
    Collector(settings, settings.topic_recommendations).by_trigger("p1", "p3", timeout=90)
    log = worker.log()
    assert "dead-lettered" in log  # the DLQ path logged, and ran
    assert PASSWORD not in log
    for user in users:
        assert user not in log
