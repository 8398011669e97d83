"""End to end on the real broker and Redis: events in, recommendations with reasons out."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jsonschema
import pytest
import redis

from tests import shop
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"
REC_SCHEMA = json.loads((SCHEMAS / "recommendation.schema.json").read_text())
DLQ_SCHEMA = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
TITLES = dict(zip(shop.catalog()["item_id"], shop.catalog()["title"], strict=True))


def ids(rec: dict) -> list[str]:
    return [i["item_id"] for i in rec["items"]]


def dept(item_ids: list[str], name: str) -> int:
    return sum(i.startswith(name + "-") for i in item_ids)


def test_each_event_gets_ranked_items_with_reasons_that_cite_real_evidence(
    settings, running, shop_model
):
    recs = Collector(settings, settings.topic_recommendations)
    history = ["running-1", "running-2", "running-7"]
    produce(
        settings, settings.topic_events, [event(f"a{n}", "alice", i) for n, i in enumerate(history)]
    )
    produce(settings, settings.topic_events, [event("a3", "alice", "running-4", "purchase")])
    produce(
        settings,
        settings.topic_events,
        [event("b0", "bob", "books-1"), event("b1", "bob", "books-2", "click")],
    )
    got = recs.by_trigger("a0", "a1", "a2", "a3", "b0", "b1")

    for rec in got.values():
        jsonschema.validate(rec, REC_SCHEMA)
        assert rec["model_version"] == shop_model.model.version
        assert len(rec["items"]) == 10
        assert [i["rank"] for i in rec["items"]] == list(range(1, 11))
    assert all(k in (b"alice", b"bob") for k in recs.keys)

    alice = got["a3"]
    assert dept(ids(alice), "running") >= 8
    assert set(ids(alice)).isdisjoint(history + ["running-4"])  # seen and purchased
    for item in alice["items"]:
        if item["reason_code"] == "similar_to_recent":
            for cited in item["evidence"]["items"]:
                assert cited["item_id"] in history + ["running-4"]
                assert cited["title"] == TITLES[cited["item_id"]]
                assert cited["title"] in item["reason"]
    assert any(i["reason_code"] == "similar_to_recent" for i in alice["items"])
    assert dept(ids(got["b1"]), "books") >= 8


def test_a_users_next_event_changes_their_recommendations(settings, running):
    recs = Collector(settings, settings.topic_recommendations)
    produce(settings, settings.topic_events, [event("c0", "carol", "outdoor-3")])
    first = recs.by_trigger("c0")["c0"]
    assert dept(ids(first), "outdoor") >= 8
    produce(settings, settings.topic_events, [event("c1", "carol", "kitchen-2", "purchase")])
    second = recs.by_trigger("c1")["c1"]
    assert ids(second) != ids(first)
    assert dept(ids(second), "kitchen") > dept(ids(first), "kitchen")
    assert "kitchen-2" not in ids(second)


def test_malformed_events_go_to_the_dead_letter_topic_and_the_worker_goes_on(settings, running):
    bad = [
        (b"u1", b"{this is not json"),
        (b"u1", json.dumps({"event_id": "x1", "user_id": "u1", "type": "view", "ts": 1}).encode()),
        (
            b"u1",
            json.dumps(
                {
                    "event_id": "x2",
                    "user_id": "u1",
                    "item_id": "running-1",
                    "type": "view",
                    "ts": "now",
                }
            ).encode(),
        ),
        event("x3", "u1", "no-such-item"),
        (b"u1", b"\xff\xfe\xfa"),
    ]
    produce(settings, settings.topic_events, bad)
    produce(settings, settings.topic_events, [event("ok1", "u1", "running-1")])

    dead = Collector(settings, settings.topic_dlq).wait_for(lambda r: len(r) >= 5)
    for record in dead:
        jsonschema.validate(record, DLQ_SCHEMA)
    assert [d["reason"] for d in dead] == [
        "invalid_json",
        "schema",
        "schema",
        "unknown_item",
        "invalid_json",
    ]
    assert [base64.b64decode(d["original_b64"]) for d in dead] == [v for _, v in bad]
    assert "item_id" in dead[1]["error"]
    assert "no-such-item" in dead[3]["error"]
    assert {d["source"]["topic"] for d in dead} == {settings.topic_events}

    ok = Collector(settings, settings.topic_recommendations).by_trigger("ok1")["ok1"]
    assert len(ok["items"]) == 10
    assert running.proc.poll() is None
    assert running.metric("streamrec_dlq_events_total", reason="unknown_item") == 1
    assert running.metric("streamrec_dlq_events_total", reason="invalid_json") == 2


def test_catalog_changes_take_effect_without_a_restart(settings, running):
    recs = Collector(settings, settings.topic_recommendations)
    fresh = {
        "item_id": "fresh-1",
        "title": "Trail Runner 9",
        "category": "running",
        "tags": ["running", "trail"],
        "description": "Trail Runner for running",
    }
    produce(settings, settings.topic_items, [(b"fresh-1", json.dumps(fresh).encode())])
    deadline = time.monotonic() + 30
    while running.metric("streamrec_index_items") < 101:
        assert time.monotonic() < deadline, running.log()
        time.sleep(0.2)
    # A user whose only history is the new item gets its (content-based) neighbourhood.
    produce(settings, settings.topic_events, [event("f0", "frank", "fresh-1")])
    rec = recs.by_trigger("f0")["f0"]
    assert dept(ids(rec), "running") >= 8

    gone = rec["items"][0]["item_id"]
    item = shop.catalog().set_index("item_id").loc[gone]
    body = {
        "item_id": gone,
        "title": item["title"],
        "category": item["category"],
        "available": False,
    }
    produce(settings, settings.topic_items, [(gone.encode(), json.dumps(body).encode())])
    deadline = time.monotonic() + 30
    while running.metric("streamrec_index_items") > 100:
        assert time.monotonic() < deadline, running.log()
        time.sleep(0.2)
    produce(settings, settings.topic_events, [event("f1", "frank", "fresh-1", "click")])
    assert gone not in ids(recs.by_trigger("f1")["f1"])


def test_metrics_cover_throughput_latency_and_the_model(settings, running, shop_model):
    produce(
        settings, settings.topic_events, [event(f"m{n}", f"u{n}", "books-3") for n in range(20)]
    )
    Collector(settings, settings.topic_recommendations).wait_for(lambda r: len(r) >= 20)
    deadline = time.monotonic() + 10
    while running.metric("streamrec_recommendations_published_total") < 20:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    text = running.metrics()
    assert running.metric("streamrec_events_consumed_total", type="view") == 20
    assert running.metric("streamrec_event_to_publish_seconds_count") == 20
    assert running.metric("streamrec_retrieval_seconds_count") >= 1
    assert running.metric("streamrec_index_items") == 100
    assert f'streamrec_model_info{{model_version="{shop_model.model.version}"}} 1.0' in text


def test_every_metric_on_the_dashboard_is_exported_by_a_running_worker(settings, running):
    """...or by the reason writer, whose metrics tests/integration/test_reason_upgrades.py
    checks against a running writer."""
    from tests.deploy.test_dashboard import (
        DASHBOARD_FILE,
        METRIC_NAME,
        metric_family,
        writer_families,
    )

    exported = {
        line.split()[2] for line in running.metrics().splitlines() if line.startswith("# TYPE ")
    }
    used = {metric_family(n) for n in METRIC_NAME.findall(DASHBOARD_FILE.read_text())}
    assert used
    assert used - writer_families() <= exported


def test_an_item_tombstone_makes_the_item_unavailable(settings, running):
    recs = Collector(settings, settings.topic_recommendations)
    produce(settings, settings.topic_events, [event("t0", "tina", "books-3")])
    first = recs.by_trigger("t0")["t0"]
    gone = first["items"][0]["item_id"]
    produce(settings, settings.topic_items, [(gone.encode(), None)])  # a real tombstone
    deadline = time.monotonic() + 30
    while running.metric("streamrec_items_updated_total", action="unavailable") < 1:
        assert time.monotonic() < deadline, running.log()
        time.sleep(0.2)
    produce(settings, settings.topic_events, [event("t1", "tina", "books-3", "click")])
    assert gone not in ids(recs.by_trigger("t1")["t1"])
    assert running.metric("streamrec_dlq_events_total", reason="invalid_json") == 0


def test_a_full_redis_holds_the_events_until_there_is_room_and_loses_none(settings, running):
    """Out of memory, Redis refuses writes: the worker retries with backoff, counts the
    errors, holds the batch (so its offsets are not committed), and answers every event
    once memory is freed."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        produce(
            settings, settings.topic_events, [event(f"f{n}", "fiona", "books-1") for n in range(5)]
        )
        deadline = time.monotonic() + 60
        while running.metric("streamrec_redis_errors_total", op="apply") == 0:
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.2)
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", policy)
        client.close()
    got = Collector(settings, settings.topic_recommendations).by_trigger(
        *[f"f{n}" for n in range(5)]
    )
    assert len(got) == 5
    assert running.proc.poll() is None
    assert running.metric("streamrec_dlq_events_total", reason="processing_error") == 0
