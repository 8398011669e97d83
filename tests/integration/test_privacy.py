"""Secrets and user ids stay out of logs; a password-protected Redis works."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.local_infra import start_redis
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from tests import shop
from tests.conftest import run_cli
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


def test_a_forget_request_on_the_control_topic_erases_a_pseudonymised_user(settings, start_worker):
    from streamrec.stream.pseudonyms import pseudonymiser

    key = SecretStr("hmac-key-for-the-test")
    settings = settings.model_copy(update={"user_id_hmac_key": key})
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    carol, dave = "carol-private-9", "dave-private-3"
    produce(
        settings,
        settings.topic_events,
        [
            event("c1", carol, "running-1"),
            event("c2", carol, "running-2"),
            event("d1", dave, "books-1"),
        ],
    )
    recs = Collector(settings, settings.topic_recommendations).by_trigger("c1", "c2", "d1")
    assert recs["c2"]["user_id"] == carol  # consumers get the id the producer sent
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    pseudonym = pseudonymiser(key)(carol)

    def carol_keys() -> list[bytes]:
        return client.keys(f"sr:{{u:{pseudonym}}}:*")

    assert carol_keys()
    for k in client.keys("*"):  # no id in any key or stored value
        assert carol.encode() not in k
        assert dave.encode() not in k
        if client.type(k) == b"string":
            assert carol.encode() not in client.get(k)

    before_forget = event("late", carol, "running-3")  # stamped before the request
    forget = json.dumps({"type": "forget", "user_id": carol, "request_id": "ticket-1"})
    produce(settings, settings.topic_control, [(carol.encode(), forget.encode())])
    produce(settings, settings.topic_control, [(None, b'{"type": "forget"}')])  # no user_id
    deadline = time.monotonic() + 60
    while worker.metric("streamrec_control_requests_total", type="forget") < 1:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert not carol_keys()
    dead = Collector(settings, settings.topic_dlq).wait_for(lambda rs: len(rs) >= 1)
    assert dead[0]["reason"] == "schema"
    assert dead[0]["source"]["topic"] == settings.topic_control

    # An event stamped before the request is ignored; a later one starts afresh.
    produce(settings, settings.topic_events, [before_forget])
    time.sleep(0.1)
    produce(settings, settings.topic_events, [event("fresh", carol, "books-2")])
    published = Collector(settings, settings.topic_recommendations)
    published.by_trigger("fresh")
    assert "late" not in {r["trigger_event_id"] for r in published.records}
    assert worker.metric("streamrec_forgotten_events_total") == 1
    history = client.lrange(f"sr:{{u:{pseudonym}}}:h", 0, -1)
    assert [json.loads(e)[0] for e in history] == ["books-2"]
    assert client.keys(f"sr:{{u:{pseudonymiser(key)(dave)}}}:*")  # dave is untouched
    assert "ticket-1" in worker.log()
    assert carol not in worker.log()

    # An operator's forget without the workers' key would delete nothing and say "done"
    # (found by an outside probe): it refuses, naming the setting, and changes nothing.
    keys_before = sorted(client.keys("*"))
    for hmac_key in ("", "another-key"):
        refused = run_cli(
            settings.model_copy(
                update={"user_id_hmac_key": SecretStr(hmac_key) if hmac_key else None}
            ),
            "forget",
            dave,
        )
        assert refused.returncode != 0
        assert "streamrec forget: the workers pseudonymise user ids" in refused.stderr
        assert "STREAMREC_USER_ID_HMAC_KEY" in refused.stderr
        assert sorted(client.keys("*")) == keys_before
    done = run_cli(settings, "forget", dave)
    assert done.returncode == 0, done.stderr
    assert not client.keys(f"sr:{{u:{pseudonymiser(key)(dave)}}}:*")
    client.close()
