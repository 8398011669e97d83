"""The Redis store on a real 3-master, 3-replica Redis Cluster (deploy/local/redis-cluster.sh):
item statistics exactly-once per event however the worker stops, forgetting, the catalog."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis as redis_sync

from streamrec.engine.types import Event, Item
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.redis_store.keys import KeyLayout
from streamrec.stream.redis_store.users import MARKER_GRACE_S
from tests.stream.test_item_stats_store import EVENTS, reference

pytestmark = pytest.mark.integration

LAYOUT = KeyLayout(cluster=True)
_loop = asyncio.new_event_loop()


def run(coro):  # type: ignore[no-untyped-def]
    return _loop.run_until_complete(coro)


def store_for(url: str, **kwargs: Any) -> RedisStore:
    return RedisStore.from_url(
        url, history_length=20, dedupe_ttl_s=3600, recommendation_ttl_s=600, **kwargs
    )


def cluster(url: str) -> redis_sync.RedisCluster:
    host, port = url.split("://", 1)[1].split(",")[0].split(":")
    return redis_sync.RedisCluster(host=host, port=int(port))


def assert_counts_equal_reference(url: str, events: Sequence[Event]) -> None:
    expected = reference(events)
    client = cluster(url)
    items = sorted({e.item_id for e in events})
    for kind, table in (("v", expected.viewed), ("b", expected.bought)):
        got = {}
        for item in items:
            rows = client.zrange(LAYOUT.cooccurrence(kind, item), 0, -1, withscores=True)
            if rows:
                got[item] = {m.decode(): int(s) for m, s in rows}
        assert got == table, kind
    scores = {m.decode(): s for m, s in client.zrange(LAYOUT.trend, 0, -1, withscores=True)}
    assert scores.keys() == expected.scores.keys()
    for item, score in expected.scores.items():
        assert scores[item] == pytest.approx(score, rel=1e-14)
    client.close()


def keys_matching(url: str, pattern: str) -> list[bytes]:
    client = cluster(url)
    try:
        return list(client.scan_iter(match=pattern, target_nodes=redis_sync.RedisCluster.PRIMARIES))
    finally:
        client.close()


def test_replayed_events_count_exactly_once_on_a_cluster(redis_cluster_url):
    store = store_for(redis_cluster_url)
    first = run(store.apply(EVENTS))
    again = run(store.apply(EVENTS))
    run(store.apply(EVENTS[3:]))
    run(store.close())
    assert [a.applied for a in first] == [True] * len(EVENTS)
    assert [a.applied for a in again] == [False] * len(EVENTS)
    assert [a.state.history[-1].item_id for a in first] == [e.item_id for e in EVENTS]
    assert_counts_equal_reference(redis_cluster_url, EVENTS)


def test_a_worker_stopped_between_apply_and_flush_counts_on_replay(redis_cluster_url):
    crashed = store_for(redis_cluster_url)

    async def no_flush(events: Any, replies: Any, plan_keys: Any, settled: Any) -> int:
        return 0  # the process died before the statistics flush

    crashed._flush_stats = no_flush  # type: ignore[method-assign]
    run(crashed.apply(EVENTS))
    run(crashed.close())
    assert keys_matching(redis_cluster_url, "sr:{items}:trend") == []

    replaying = store_for(redis_cluster_url)
    out = run(replaying.apply(EVENTS))  # the events again, from the last committed offset
    assert not any(a.applied for a in out)
    run(replaying.close())
    assert_counts_equal_reference(redis_cluster_url, EVENTS)


def test_a_flush_cut_short_counts_each_slot_once_on_replay(redis_cluster_url):
    crashed = store_for(redis_cluster_url)
    real_run_script = crashed.run_script
    sent = 0

    async def some_calls(name: str, keys: Any, args: Any, pipe: Any = None) -> Any:
        nonlocal sent
        if name == "stats":
            sent += 1
            if sent % 2 == 0:
                return None  # this slot's call never reached Redis
        return await real_run_script(name, keys, args, pipe)

    crashed.run_script = some_calls  # type: ignore[method-assign]
    run(crashed.apply(EVENTS))
    run(crashed.close())
    assert sent > 2

    replaying = store_for(redis_cluster_url)
    run(replaying.apply(EVENTS))
    run(replaying.apply(EVENTS))  # and once more: still once
    run(replaying.close())
    assert_counts_equal_reference(redis_cluster_url, EVENTS)


def test_flushed_plans_go_with_the_next_batch_and_their_markers_soon_after(redis_cluster_url):
    store = store_for(redis_cluster_url)
    run(store.apply(EVENTS[:3]))
    assert keys_matching(redis_cluster_url, "sr:{u:ann}:st:*")
    first = set(keys_matching(redis_cluster_url, "*:sd:*"))
    assert first
    run(store.apply(EVENTS[3:]))
    assert not keys_matching(redis_cluster_url, "sr:{u:ann}:st:*")
    run(store.apply([Event("e7", "cy", "map", "view", EVENTS[-1].ts)]))
    run(store.close())
    assert not keys_matching(redis_cluster_url, "sr:{u:bob}:st:*")
    client = cluster(redis_cluster_url)
    ttls = {key: client.ttl(key) for key in keys_matching(redis_cluster_url, "*:sd:*")}
    client.close()
    flushes = {key.rsplit(b":", 1)[1] for key in ttls}
    assert len(flushes) == 3
    for key in first:  # two batches on: their plans are gone, they are on their way out
        assert 0 < ttls[key] <= MARKER_GRACE_S
    latest = [k for k, ttl in ttls.items() if ttl > MARKER_GRACE_S]
    assert latest  # the last flush's: its plans may still be replayed
    assert len({k.rsplit(b":", 1)[1] for k in latest}) == 1


def test_statistics_read_back_through_the_store_on_a_cluster(redis_cluster_url):
    store = store_for(redis_cluster_url)
    run(store.apply(EVENTS))
    expected = reference(EVENTS)
    assert run(store.cooccurring(["tent", "stove"], "bought", 10)) == expected.bought
    now = EVENTS[-1].ts
    trending = dict(run(store.trending_items(now, 10)))
    assert set(trending) == set(expected.scores)
    assert trending == pytest.approx(
        {i: expected.decayed(i, now) for i in expected.scores}, rel=1e-9
    )
    run(store.close())


def test_forget_on_a_cluster_deletes_the_user_and_holds_back_late_events(redis_cluster_url):
    store = store_for(redis_cluster_url)
    run(store.apply(EVENTS))
    deleted = run(store.forget("ann", until_ms=EVENTS[2].ts))
    assert deleted > 0
    assert not keys_matching(redis_cluster_url, "sr:{u:ann}:*")
    late = run(store.apply([Event("late", "ann", "tent", "view", EVENTS[1].ts)]))
    assert late[0].forgotten
    newer = run(store.apply([Event("new", "ann", "tent", "view", EVENTS[2].ts + 1)]))
    assert newer[0].applied
    assert run(store.get("bob")).history  # others untouched
    run(store.close())


def test_the_catalog_and_its_change_log_work_on_a_cluster(redis_cluster_url):
    store = store_for(redis_cluster_url)
    run(store.put_items([Item("tent", "Summit Tent", "camping"), Item("map", "Trail Map", "nav")]))
    items, position = run(store.catalog_snapshot())
    assert {i.item_id for i in items} == {"tent", "map"}
    run(store.put_items([Item("tent", "Summit Tent 2", "camping")]))
    changed, _ = run(store.catalog_changes(position))
    assert [(i.item_id, i.title) for i in changed] == [("tent", "Summit Tent 2")]
    assert run(store.missing_items(["tent", "stove"])) == 1
    assert run(store.add_missing_items([Item("stove", "Stove", "camping")])) == 1
    assert run(store.catalog_size()) == 3
    run(store.close())


def test_a_failed_apply_keeps_the_previous_flush_to_clean_up_in_order(redis_cluster_url):
    store = store_for(redis_cluster_url)
    run(store.apply(EVENTS[:3]))
    plans, markers = list(store._stale_plans), list(store._stale_markers)
    real_run_script = store.run_script

    async def refused(name: str, keys: Any, args: Any, pipe: Any = None) -> Any:
        if name == "apply":
            msg = "ERR refused before anything was sent"
            raise redis_sync.ResponseError(msg)
        return await real_run_script(name, keys, args, pipe)

    store.run_script = refused  # type: ignore[method-assign]
    with pytest.raises(redis_sync.ResponseError):
        run(store.apply(EVENTS[3:]))
    # Nothing was deleted, so nothing may be expired yet: the plans still come first.
    assert (store._stale_plans, store._stale_markers) == (plans, markers)
    assert keys_matching(redis_cluster_url, "sr:{u:ann}:st:*")
    store.run_script = real_run_script  # type: ignore[method-assign]
    run(store.apply(EVENTS[3:]))
    run(store.close())
    assert not keys_matching(redis_cluster_url, "sr:{u:ann}:st:*")
    assert_counts_equal_reference(redis_cluster_url, EVENTS)
