"""Item statistics in Redis (real redis-server): exactly-once, equal to the in-memory
reference, bounded, and never in the way of the events themselves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
import redis as redis_sync
from prometheus_client import CollectorRegistry

from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.item_stats import ItemStats, ItemStatsCounter, TrendParams
from streamrec.engine.serving.recommender import Ranked, Recommender
from streamrec.engine.types import Event, Interaction, UserState
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.redis_store import TREND, RedisStore, cooccurrence_key
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import Pipeline, RawMessage
from tests import shop

pytestmark = pytest.mark.integration

T0 = 1_763_856_000_000
HOUR_MS = 3_600_000
_loop = asyncio.new_event_loop()


def run(coro):  # type: ignore[no-untyped-def]
    return _loop.run_until_complete(coro)


def store_for(url: str, **kwargs) -> RedisStore:  # type: ignore[no-untyped-def]
    return RedisStore.from_url(
        url, history_length=20, dedupe_ttl_s=600, recommendation_ttl_s=600, **kwargs
    )


EVENTS = [
    Event("e1", "ann", "tent", "purchase", T0),
    Event("e2", "ann", "map", "view", T0 + 1000),
    Event("e3", "ann", "stove", "add_to_cart", T0 + 2000),
    Event("e4", "bob", "tent", "add_to_cart", T0 + 3000),
    Event("e5", "bob", "stove", "purchase", T0 + 4000),
    Event("e6", "bob", "tent", "view", T0 + HOUR_MS),
]


def reference(events: Sequence[Event], window: int = 5) -> ItemStatsCounter:
    counter = ItemStatsCounter(TrendParams(half_life_s=3600.0), window=window)
    history: dict[str, list[Interaction]] = {}
    for e in events:
        past = history.setdefault(e.user_id, [])
        counter.add(e.item_id, e.type, e.ts, past)
        past.append(Interaction(e.item_id, e.type, e.ts))
    return counter


def table(client: redis_sync.Redis, kind: str, items: Sequence[str]) -> dict[str, dict[str, int]]:
    out = {}
    for item in items:
        rows = client.zrange(cooccurrence_key(kind, item), 0, -1, withscores=True)
        if rows:
            out[item] = {m.decode(): int(s) for m, s in rows}
    return out


def test_replayed_events_count_exactly_once_and_match_the_reference(redis_url):
    store = store_for(redis_url)
    first = run(store.apply(EVENTS))
    again = run(store.apply(EVENTS))  # the same event_ids: a replay
    run(store.apply(EVENTS[3:]))
    run(store.close())
    assert [a.applied for a in first] == [True] * len(EVENTS)
    assert [a.applied for a in again] == [False] * len(EVENTS)

    expected = reference(EVENTS)
    client = redis_sync.Redis.from_url(redis_url)
    items = ["tent", "map", "stove"]
    assert table(client, "v", items) == expected.viewed
    assert table(client, "b", items) == expected.bought
    assert expected.bought == {"tent": {"stove": 2}, "stove": {"tent": 2}}
    scores = {m.decode(): s for m, s in client.zrange(TREND, 0, -1, withscores=True)}
    assert scores.keys() == expected.scores.keys()
    for item, score in expected.scores.items():
        assert scores[item] == pytest.approx(score, rel=1e-14)
    client.close()


@pytest.mark.parametrize("protocol", ["", "?protocol=3"], ids=["resp2", "resp3"])
def test_the_read_methods_give_decayed_counts_and_partners(redis_url, protocol):
    """Scores are read raw (no redis-py callback), so both reply shapes must parse."""
    store = store_for(redis_url + protocol)
    run(store.apply(EVENTS))
    now = T0 + HOUR_MS
    hot = run(store.trending_items(now, limit=10))
    assert [i for i, _ in hot] == ["tent", "stove", "map"]
    assert hot[0][1] == pytest.approx(reference(EVENTS).decayed("tent", now), rel=1e-9)
    assert run(store.cooccurring(["tent", "lamp"], "bought", limit=5)) == {"tent": {"stove": 2}}
    with pytest.raises(ValueError, match="kind"):
        run(store.cooccurring(["tent"], "liked", limit=5))
    stats = run(
        store.item_stats(["tent", "map"], now, TrendParams(top_n=2, min_count=1.0), co_limit=5)
    )
    run(store.close())
    assert list(stats.trending) == ["tent", "stove"]
    assert stats.trending["tent"].rank == 1
    assert stats.bought_together == {"tent": {"stove": 2}}
    assert stats.viewed_together["map"] == {"tent": 1, "stove": 1}


@pytest.mark.parametrize("co_limit", [1, 5])
def test_the_in_memory_counter_reads_what_the_store_reads(redis_url, co_limit):
    store = store_for(redis_url)
    run(store.apply(EVENTS))
    now = T0 + HOUR_MS
    params = TrendParams(half_life_s=3600.0, top_n=2, min_count=1.0)
    session = ["tent", "stove", "map", "lamp"]
    read = run(store.item_stats(session, now, params, co_limit=co_limit))
    run(store.close())
    counter = reference(EVENTS)
    counter.params = params
    mirrored = counter.stats(session, now, co_limit=co_limit)
    assert mirrored.bought_together == read.bought_together
    assert mirrored.viewed_together == read.viewed_together
    assert [list(t.items()) for t in mirrored.viewed_together.values()] == [
        list(t.items()) for t in read.viewed_together.values()
    ]
    assert mirrored.trending.keys() == read.trending.keys()
    for item_id, hot in read.trending.items():
        assert mirrored.trending[item_id].count == pytest.approx(hot.count, rel=1e-9)


def test_future_events_count_as_now_and_memory_stays_bounded(redis_url):
    store = store_for(redis_url, cooccurrence_max_members=3, cooccurrence_ttl_s=120)
    run(store.apply([Event("f1", "cat", "tent", "view", T0 + 20 * HOUR_MS)], now_ms=T0))
    assert run(store.trending_items(T0, limit=1))[0][1] == pytest.approx(1.0, rel=1e-9)
    events = [Event(f"g{n}", f"u{n}", f"i{n}", "view", T0) for n in range(12)]
    events += [Event(f"h{n}", f"u{n}", "hub", "view", T0 + 1) for n in range(12)]
    run(store.apply(events, now_ms=T0 + 1))
    run(store.close())
    client = redis_sync.Redis.from_url(redis_url)
    assert client.zcard(cooccurrence_key("v", "hub")) <= 6  # twice the cap at most
    assert 0 < client.ttl(cooccurrence_key("v", "hub")) <= 120
    client.close()


def test_a_broken_statistics_update_never_fails_the_event(redis_url):
    client = redis_sync.Redis.from_url(redis_url)
    client.set(TREND, "not a sorted set")
    errors: list[str] = []
    store = store_for(redis_url, on_stats_error=errors.append)
    [applied] = run(store.apply([Event("x1", "dan", "tent", "view", T0)]))
    stats = run(store.item_stats(["tent"], T0, TrendParams(), co_limit=5))
    run(store.close())
    assert applied.applied
    assert [i.item_id for i in applied.state.history] == ["tent"]
    assert errors == ["update", "read"]
    assert stats == ItemStats()
    client.close()


class RecordingRecommender(Recommender):
    """Remembers the statistics each batch was ranked with."""

    seen: list[ItemStats | None]

    def recommend(
        self,
        states: Sequence[UserState],
        trigger_event_ids: Sequence[str],
        now_ms: int,
        stats: ItemStats | None = None,
    ) -> list[Ranked]:
        self.seen.append(stats)
        return super().recommend(states, trigger_event_ids, now_ms, stats=stats)


def message(event_id: str, user: str, item: str, kind: str) -> RawMessage:
    body = {"event_id": event_id, "user_id": user, "item_id": item, "type": kind, "ts": T0}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, 0)


def shop_pipeline(
    redis_url: str, shop_model: Any, **settings: Any
) -> tuple[Pipeline, RedisStore, RecordingRecommender]:
    """A pipeline on the shop model whose recommender records the statistics it gets, with
    the shop catalog in Redis."""
    store = RedisStore.from_url(
        redis_url, history_length=10, dedupe_ttl_s=60, recommendation_ttl_s=60
    )
    index = FaissItemIndex.load(shop_model.model_dir / "index")
    recommender = RecordingRecommender(shop_model.model, index, Catalog())
    recommender.seen = []
    config = Settings(
        redis_url=redis_url,  # type: ignore[arg-type]
        model_dir=shop_model.model_dir,
        **settings,
    )
    pipeline = Pipeline(config, recommender, store, Metrics(CollectorRegistry()), clock=lambda: T0)
    run(store.put_items(catalog_items(shop.catalog())))
    return pipeline, store, recommender


def test_the_pipeline_counts_each_event_once_and_ranks_with_the_statistics(redis_url, shop_model):
    pipeline, store, recommender = shop_pipeline(redis_url, shop_model, trend_min_count=1.0)
    batch = [
        message("p1", "ann", "books-1", "purchase"),
        message("p2", "ann", "books-2", "purchase"),
        message("p3", "bob", "books-1", "add_to_cart"),
    ]
    try:
        run(pipeline.handle_events(batch))
        result = run(pipeline.handle_events(batch))  # redelivered after a crash
    finally:
        run(pipeline.close())
        run(store.close())
    assert len(result.recommendations) == 3
    stats = recommender.seen[-1]
    assert stats is not None
    assert stats.bought_together["books-1"] == {"books-2": 1}
    assert stats.trending["books-1"].count == pytest.approx(2.0, rel=1e-9)
    assert stats.trending["books-1"].rank == 1


def test_the_pipeline_reads_only_the_strongest_partners_of_each_session_item(redis_url, shop_model):
    pipeline, store, recommender = shop_pipeline(redis_url, shop_model, cooccurrence_read_limit=1)
    first = [
        message("a1", "ann", "books-2", "purchase"),
        message("c1", "cat", "books-2", "purchase"),
        message("d1", "dan", "books-3", "purchase"),
    ]
    then = [
        message("a2", "ann", "books-1", "purchase"),
        message("c2", "cat", "books-1", "purchase"),
        message("d2", "dan", "books-1", "purchase"),
    ]
    try:
        run(pipeline.handle_events(first))
        run(pipeline.handle_events(then))
        stored = run(store.cooccurring(["books-1"], "bought", limit=10))
    finally:
        run(pipeline.close())
        run(store.close())
    assert stored == {"books-1": {"books-2": 2, "books-3": 1}}
    stats = recommender.seen[-1]
    assert stats is not None
    assert stats.bought_together["books-1"] == {"books-2": 2}  # books-3 is beyond the limit
