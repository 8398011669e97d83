"""The worker and the API on a real 3-master, 3-replica Redis Cluster
(deploy/local/redis-cluster.sh), chosen by a ``redis+cluster://`` URL: the pipeline, the
API, forgetting, a worker killed mid-stream and a master killed mid-stream.

The pipeline, API and crash tests are the single-node ones, run again here with the
cluster's URL in place of the redis-server's (the ``redis_url`` fixture below); on top of
their checks, the item statistics must equal those computed from the produced stream, so
a crash or a failover counts no event twice and drops none.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from streamrec.engine.serving.item_stats import ItemStatsCounter, TrendParams
from streamrec.engine.types import Interaction
from streamrec.stream.contracts import ControlMessage, encode_control
from streamrec.stream.redis_store import RedisStore, user_key
from streamrec.stream.redis_store.keys import KeyLayout
from streamrec.stream.settings import Settings
from tests import redis_cluster
from tests.integration.kafka_helpers import Collector, event, produce
from tests.integration.test_api_and_clients import (  # noqa: F401 - run here on the cluster
    start_api,
    test_events_sent_with_the_helpers_come_back_as_typed_lists_and_over_http,
)
from tests.integration.test_crash_recovery import (
    SteadyProducer,
    _check_exactly_once,
    _consumed,
    _started,
    _stream,
    _wait,
)
from tests.integration.test_pipeline import (  # noqa: F401 - run here on the cluster
    test_a_users_next_event_changes_their_recommendations,
    test_catalog_changes_take_effect_without_a_restart,
    test_each_event_gets_ranked_items_with_reasons_that_cite_real_evidence,
    test_malformed_events_go_to_the_dead_letter_topic_and_the_worker_goes_on,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Every test here (and every fixture it uses) gets the cluster instead of a node."""
    return redis_cluster_url


def _cooccurrence_equals_the_stream(settings: Settings, produced: list[tuple[bytes, bytes]]):
    """The viewed- and bought-together counts on the cluster are those of the valid
    produced events, each counted once (whatever crashed meanwhile)."""
    counter = ItemStatsCounter(TrendParams(half_life_s=settings.trend_half_life_s))
    history: dict[str, list[Interaction]] = {}
    items = set()
    for _, value in produced:
        body = json.loads(value)
        if body["type"] not in ("view", "click", "add_to_cart", "purchase"):
            continue
        past = history.setdefault(body["user_id"], [])
        counter.add(body["item_id"], body["type"], body["ts"], past)
        past.append(Interaction(body["item_id"], body["type"], body["ts"]))
        items.add(body["item_id"])
    layout = KeyLayout(cluster=True)
    client = redis_cluster.sync_client(settings.redis_url.get_secret_value())
    try:
        for kind, expected in (("v", counter.viewed), ("b", counter.bought)):
            got = {}
            for item in items:
                rows = client.zrange(layout.cooccurrence(kind, item), 0, -1, withscores=True)
                if rows:
                    got[item] = {m.decode(): int(s) for m, s in rows}
            assert got == expected, f"{kind}: counts differ from the produced stream"
        trend = client.zrange(layout.trend, 0, -1)
        assert {m.decode() for m in trend} == set(counter.scores)
    finally:
        client.close()


def test_a_worker_killed_mid_stream_on_a_cluster_applies_and_counts_every_event_once(
    settings, start_worker
):
    settings, worker = _started(settings, start_worker, "cluster-crash-0")
    messages, expected, malformed = _stream()
    producer = SteadyProducer(settings, messages, rate=60)
    producer.start()
    seen = _consumed(worker)
    _wait(lambda: _consumed(worker) >= seen + 40, 120, "events consumed", worker.log)
    worker.proc.kill()
    worker.proc.wait()
    worker = start_worker(settings, "cluster-crash-1")
    producer.join(timeout=180)
    assert producer.error is None, producer.error
    figures = _check_exactly_once(settings, expected, malformed, messages)
    assert figures["applied"] == figures["valid"]
    assert figures["dead_letters"] == len(malformed)
    _cooccurrence_equals_the_stream(settings, messages)
    print(f"\ncluster crash figures: {figures}")  # noqa: T201 - reported in the test log


def test_a_master_killed_mid_stream_fails_over_and_nothing_is_lost_or_doubled(
    settings, start_worker, redis_cluster_service
):
    url = settings.redis_url.get_secret_value()
    settings, worker = _started(settings, start_worker, "failover", redis_retry_max_s=1.0)
    messages, expected, malformed = _stream()
    producer = SteadyProducer(settings, messages, rate=60)
    producer.start()
    _wait(lambda: _consumed(worker) >= 40, 120, "events consumed", worker.log)
    # The URL's first master: clients that only knew that node would be lost with it.
    current = redis_cluster.masters(url)
    victim = next(port for _, port in redis_cluster.nodes(url) if port in current)
    redis_cluster.kill_master(redis_cluster_service, victim)
    try:
        started = time.monotonic()
        redis_cluster.wait_cluster_ok(url, timeout=60, not_master=[victim])
        took = time.monotonic() - started
        producer.join(timeout=180)
        assert producer.error is None, producer.error
        figures = _check_exactly_once(settings, expected, malformed, messages)
        assert figures["applied"] == figures["valid"]
        assert figures["dead_letters"] == len(malformed)
        _cooccurrence_equals_the_stream(settings, messages)
        assert worker.proc.poll() is None, worker.log()
    finally:
        redis_cluster.restart_node(redis_cluster_service, victim)
    figures["failover_s"] = round(took, 1)
    print(f"\nfailover figures: {figures}")  # noqa: T201 - reported in the test log


def test_a_forget_request_erases_the_user_on_a_cluster(settings, running):
    collector = Collector(settings, settings.topic_recommendations)
    produce(settings, settings.topic_events, [event("f1", "gone-user", "outdoor-1", "view")])
    produce(settings, settings.topic_events, [event("k1", "kept-user", "outdoor-2", "view")])
    collector.wait_for(lambda rs: {"f1", "k1"} <= {r["trigger_event_id"] for r in rs}, timeout=60)
    forget = ControlMessage("forget", "gone-user", request_id="ticket-7")
    produce(settings, settings.topic_control, [(b"gone-user", encode_control(forget))])
    client = redis_cluster.sync_client(settings.redis_url.get_secret_value())
    try:
        deadline = time.monotonic() + 60
        while client.exists(user_key("gone-user", "h")):
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.2)
        assert client.exists(user_key("kept-user", "h"))
    finally:
        client.close()

    async def latest() -> bytes | None:
        store = RedisStore.from_settings(settings)
        try:
            return await store.latest_recommendation("gone-user")
        finally:
            await store.close()

    assert asyncio.run(latest()) is None
    assert "gone-user" not in running.log()
