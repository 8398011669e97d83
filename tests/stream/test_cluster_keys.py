"""The cluster key layout, without a server: every script's keys share one hash slot, and
the cluster URL is read as documented."""

from __future__ import annotations

import json

import pytest
from redis.crc import key_slot as redis_key_slot

from streamrec.engine.types import Interaction
from streamrec.stream.redis_store.cluster_stats import (
    Plan,
    StatsLimits,
    event_member,
    flush_calls,
    parse_plan,
)
from streamrec.stream.redis_store.connection import cluster_client
from streamrec.stream.redis_store.keys import (
    KeyLayout,
    forgotten_key,
    is_cluster_url,
    key_slot,
    slot_tag,
    user_key,
)

LIMITS = StatsLimits(
    marker_ttl_s=600,
    cooccurrence_max_members=100,
    cooccurrence_ttl_s=3600,
    trend_max_items=1000,
    cooccurrence_window=5,
)


def test_key_slot_is_redis_clusters():
    for key in ["sr:{u:ann}:h", "plain", "a{}b{c}", "x{y", "sr:co:{c7}:v:tent", "汉字{键}"]:
        assert key_slot(key) == redis_key_slot(key.encode())


def test_a_slot_tag_exists_for_every_slot():
    for slot in range(16384):
        tag = slot_tag(slot)
        assert redis_key_slot(f"sr:forgotten:{{{tag}}}:x".encode()) == slot
        assert not {"{", "}"} & set(tag)


def test_slot_tag_refuses_a_slot_out_of_range():
    with pytest.raises(ValueError, match="slot must be in"):
        slot_tag(16384)


@pytest.mark.parametrize("user", ["ann", "a}b", "用户 7", "*"])
def test_the_forget_marker_shares_the_users_slot_and_holds_no_id(user):
    marker = forgotten_key(user)
    assert key_slot(marker) == key_slot(user_key(user, "h"))
    if user != "*":
        assert user not in marker.split(":", 2)[2]


def test_the_single_node_layout_is_unchanged_and_the_cluster_one_is_tagged():
    single, cluster = KeyLayout(), KeyLayout(cluster=True)
    assert (single.catalog, single.catalog_log, single.trend) == (
        "sr:catalog",
        "sr:catalog:log",
        "sr:items:trend",
    )
    assert single.cooccurrence("v", "tent") == "sr:co:v:tent"
    assert key_slot(cluster.catalog) == key_slot(cluster.catalog_log)
    assert cluster.cooccurrence("b", "tent").startswith("sr:co:{c")


def plan(flush: str, item: str, kind: str, previous: list[tuple[str, str]], user: str) -> Plan:
    return Plan(
        flush,
        item,
        kind,
        "1.5",
        tuple(Interaction(i, t, 0) for i, t in previous),  # type: ignore[arg-type]
        event_member(user, f"e-{item}"),
        user_key(user, f"st:e-{item}"),
    )


def test_each_flush_call_touches_one_slot_and_counts_both_directions():
    plans = [
        plan("f1", "tent", "purchase", [("map", "view"), ("stove", "add_to_cart")], "ann"),
        plan("f1", "stove", "view", [("tent", "view")], "bob"),
        plan("f0", "map", "view", [], "cy"),  # a replayed plan of an older flush
    ]
    calls = flush_calls(plans, KeyLayout(cluster=True), LIMITS)
    bumps: dict[str, int] = {}
    for keys, spec in calls:
        assert len({key_slot(k) for k in keys}) == 1, keys
        assert ":sd:" in keys[0]  # the marker set first
        for _index, _member, ops in json.loads(spec)["events"]:
            for op in ops:
                kind = "trend" if len(op) == 3 else keys[op[0] - 1].split(":")[3]
                bumps[kind] = bumps.get(kind, 0) + 1
    # trend: 3 events; viewed: tent<->map, tent<->stove, stove<->tent; bought: tent<->stove
    assert bumps == {"trend": 3, "v": 6, "b": 2}
    assert {keys[0].rsplit(":", 1)[1] for keys, _ in calls} == {"f0", "f1"}


def test_a_plan_reads_back_as_the_script_wrote_it():
    raw = '["f1","tent","view","-2.5",["[\\"map\\",\\"view\\",7]"]]'
    got = parse_plan(raw, "m", "k")
    assert got.previous == (Interaction("map", "view", 7),)
    assert (got.flush_id, got.item_id, got.weight) == ("f1", "tent", "-2.5")


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", True),
        ("rediss+cluster://h:7000", True),
        ("redis://127.0.0.1:6379/0", False),
        ("unix:///run/redis.sock", False),
    ],
)
def test_the_url_scheme_chooses_the_cluster(url, cluster):
    assert is_cluster_url(url) is cluster


def test_a_cluster_url_carries_startup_nodes_and_credentials():
    client = cluster_client("redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    nodes = {(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()}
    assert nodes == {("10.0.0.1", 7000), ("10.0.0.2", 7001)}
    kwargs = client.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("app", "p@ss")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "at least one HOST:PORT"),
        ("redis+cluster://h1", "needs HOST:PORT"),
        ("redis+cluster://h1:7000/2", "only database 0"),
    ],
)
def test_a_bad_cluster_url_is_refused_with_the_reason(url, message):
    with pytest.raises(ValueError, match=message):
        cluster_client(url)
