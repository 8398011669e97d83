"""Replayed events (consumed again after a crash or a rebalance): nothing lost, nothing
ranked twice without need, and each list encoded once.

A replayed event was already applied in Redis (its dedupe marker is set). Its list is
republished unchanged from Redis when it is the stored one; it is ranked again only where
its list may never have been published; and nothing goes out for it where a later batch
of the same user stored (so published) a newer list. The worker publishes a batch before
it takes the next one, which is what makes "a later batch stored a list" mean "this
event's batch was published".

Driven directly (no Faust) against the real redis-server, like test_pipeline_failures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.item_stats import ItemStats
from streamrec.engine.serving.recommender import Ranked, Recommender
from streamrec.engine.types import UserState
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.contracts import decode_event
from streamrec.stream.redis_store import RedisStore, user_key
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import BatchResult, Pipeline, RawMessage
from tests import shop

pytestmark = pytest.mark.integration
T = TypeVar("T")
NOW = 1_700_000_000_000


class CountingRecommender(Recommender):
    """Counts the lists it ranks, per trigger event."""

    ranked: list[str]

    def recommend(
        self,
        states: Sequence[UserState],
        trigger_event_ids: Sequence[str],
        now_ms: int,
        stats: ItemStats | None = None,
    ) -> list[Ranked]:
        self.ranked = [*getattr(self, "ranked", []), *trigger_event_ids]
        return super().recommend(states, trigger_event_ids, now_ms, stats=stats)


@dataclass
class Rig:
    pipeline: Pipeline
    recommender: CountingRecommender
    store: RedisStore
    redis: redis.Redis
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def handle(self, *messages: RawMessage) -> BatchResult:
        return self.run(self.pipeline.handle_events(list(messages)))

    def ranked(self) -> list[str]:
        return list(getattr(self.recommender, "ranked", []))

    def stored(self, user: str) -> bytes | None:
        value = self.redis.get(user_key(user, "recs"))
        return None if value is None else bytes(value)  # type: ignore[arg-type]


@pytest.fixture
def rig(settings: Settings, shop_model: shop.TrainedShop) -> Iterator[Callable[..., Rig]]:
    """``rig(**settings)``: a pipeline with a counting recommender on the shop model."""
    made: list[Rig] = []

    def make(**update: object) -> Rig:
        tuned = settings.model_copy(update=update)
        loop = asyncio.new_event_loop()
        store = RedisStore.from_settings(tuned)
        index = FaissItemIndex.load(shop_model.model_dir / "index")
        recommender = CountingRecommender(shop_model.model, index, Catalog())
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(tuned, recommender, store, metrics, clock=lambda: NOW)
        client = redis.Redis.from_url(settings.redis_url.get_secret_value())
        made.append(Rig(pipeline, recommender, store, client, loop))
        made[-1].run(store.put_items(catalog_items(shop.catalog())))
        return made[-1]

    yield make
    for r in made:
        r.redis.close()
        r.run(r.pipeline.close())
        r.run(r.store.close())
        r.loop.close()


def event(event_id: str, user: str, item: str = "books-1") -> RawMessage:
    body = {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "ts": NOW}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, 0)


def triggers(result: BatchResult) -> list[str]:
    return [json.loads(r.value)["trigger_event_id"] for r in result.recommendations]


def test_a_replayed_event_whose_list_was_published_gets_the_same_bytes_without_ranking(rig):
    r = rig()
    first = r.handle(event("a1", "ann"), event("b1", "bob"))
    assert r.ranked() == ["a1", "b1"]
    again = r.handle(event("a1", "ann"), event("b1", "bob"))  # crash before the commit
    assert r.ranked() == ["a1", "b1"], "a replayed event is not ranked again"
    assert again.recommendations == first.recommendations  # the same keys and bytes
    assert again.event_ts == first.event_ts
    assert r.pipeline.metrics.duplicate_events._value.get() == 2
    assert r.pipeline.metrics.replayed_lists.labels(outcome="republish")._value.get() == 2


def test_a_crash_between_apply_and_publish_still_publishes_exactly_one_list(rig):
    """The worker died after Redis applied the event and before any list was stored or
    published: the replayed event is ranked (once) and answered with one list."""
    r = rig()
    raw = event("a1", "ann")
    applied = decode_event(raw.value, max_bytes=10_000, now_ms=NOW)
    [outcome] = r.run(r.store.apply([applied], now_ms=NOW))  # ... and then the crash
    assert outcome.applied
    replayed = r.handle(raw)
    assert triggers(replayed) == ["a1"]
    assert r.ranked() == ["a1"]
    assert r.stored("ann") == replayed.recommendations[0].value
    # Replayed once more (no commit again): the stored list, not a second ranking.
    assert r.handle(raw).recommendations == replayed.recommendations
    assert r.ranked() == ["a1"]


def test_a_crash_between_store_and_publish_republishes_the_stored_list(rig):
    r = rig()
    lost = r.handle(event("a1", "ann"))  # stored in Redis, never published
    replayed = r.handle(event("a1", "ann"))
    assert r.ranked() == ["a1"]
    assert replayed.recommendations == lost.recommendations


def test_an_event_behind_a_newer_list_of_its_own_batch_is_ranked_again_not_stored(rig):
    """Two events of one user in one batch: the batch stored the second one's list, and
    may have died before publishing either. The first is ranked again (its list may be
    missing) but not stored over the newer list; the second's stored list goes out."""
    r = rig()
    lost = r.handle(event("a1", "ann"), event("a2", "ann", "books-2"))
    stored = r.stored("ann")
    replayed = r.handle(event("a1", "ann"), event("a2", "ann", "books-2"))
    assert triggers(replayed) == ["a1", "a2"]
    assert r.ranked() == ["a1", "a2", "a1"]
    assert replayed.recommendations[1] == lost.recommendations[1]
    assert r.stored("ann") == stored


def test_an_event_behind_a_later_batchs_list_publishes_nothing(rig):
    """The user's later batch stored a list, so the worker had published this event's
    batch before taking it: the replay publishes nothing for the event, and only the
    latest list again."""
    r = rig()
    r.handle(event("a1", "ann"), event("b1", "bob"))
    latest = r.handle(event("a2", "ann", "books-2"))
    replayed = r.handle(event("a1", "ann"), event("b1", "bob"), event("a2", "ann", "books-2"))
    assert triggers(replayed) == ["b1", "a2"]
    assert r.ranked() == ["a1", "b1", "a2"], "no event was ranked again"
    assert replayed.recommendations[1] == latest.recommendations[0]
    assert replayed.dead_letters == []
    replays = r.pipeline.metrics.replayed_lists
    assert replays.labels(outcome="skip")._value.get() == 1  # a1, behind a2's list
    assert replays.labels(outcome="republish")._value.get() == 2  # b1 and a2, their own


def test_a_copy_of_an_event_in_its_own_batch_still_gets_a_list(rig):
    r = rig()
    result = r.handle(event("a1", "ann"), event("a1", "ann"))
    assert triggers(result) == ["a1", "a1"]
    assert len(r.run(r.store.get("ann")).history) == 1, "applied once"


def test_the_stored_list_is_the_published_bytes(rig):
    r = rig()
    result = r.handle(event("a1", "ann"), event("b1", "bob"), event("a2", "ann", "books-2"))
    assert r.stored("bob") == result.recommendations[1].value
    assert r.stored("ann") == result.recommendations[2].value  # the user's last list
    assert r.run(r.store.latest_recommendation("ann")) == result.recommendations[2].value


def test_under_pseudonyms_the_stored_copy_carries_the_pseudonym_and_replays_the_user_id(rig):
    r = rig(user_id_hmac_key=SecretStr("k1"))
    user = "alice@example.com"
    [published] = r.handle(event("a1", user)).recommendations
    assert json.loads(published.value)["user_id"] == user
    [stored] = [r.redis.get(k) for k in r.redis.keys("sr:{u:*}:recs")]  # under the pseudonym
    assert stored is not None
    assert user.encode() not in stored
    assert stored != published.value
    [again] = r.handle(event("a1", user)).recommendations
    assert r.ranked() == ["a1"]
    assert again == published, "the user's id, and the list's id with it, are put back"
    assert r.run(r.store.latest_recommendation(user)) == published.value


def test_latest_per_user_ranks_and_publishes_one_list_per_user_per_batch(rig):
    r = rig(publish="latest_per_user")
    result = r.handle(
        event("a1", "ann", "books-1"),
        event("b1", "bob", "books-2"),
        event("a2", "ann", "books-3"),
        event("a3", "ann", "running-1"),
    )
    assert triggers(result) == ["b1", "a3"]  # in the order of their events
    assert r.ranked() == ["b1", "a3"]
    assert r.pipeline.metrics.superseded_events._value.get() == 2
    published = json.loads(result.recommendations[1].value)
    ranked_items = {i["item_id"] for i in published["items"]}
    assert not ranked_items & {"books-1", "books-3", "running-1"}  # every event applied
    history = [json.loads(e)[0] for e in r.redis.lrange(user_key("ann", "h"), 0, -1)]
    assert history == ["books-1", "books-3", "running-1"]
    assert r.stored("ann") == result.recommendations[1].value


def test_every_event_gets_its_list_by_default(rig):
    r = rig()
    result = r.handle(event("a1", "ann", "books-1"), event("a2", "ann", "books-3"))
    assert triggers(result) == ["a1", "a2"]
