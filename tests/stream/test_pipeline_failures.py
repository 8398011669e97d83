"""Failures inside the worker's pipeline: isolated, dead-lettered, counted; never fatal.

Driven directly (no Faust) against the real redis-server; Kafka is not involved here.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamrec.engine.serving.catalog import Catalog, CatalogChange, catalog_items
from streamrec.engine.serving.item_stats import ItemStats
from streamrec.engine.serving.recommender import Ranked, Recommender
from streamrec.engine.types import Item, UserState
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.contracts import encode_item
from streamrec.stream.redis_store import CATALOG, RedisStore, experiment_key, user_key
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import Pipeline, RawMessage
from tests import shop

pytestmark = pytest.mark.integration
T = TypeVar("T")
NOW = 1_700_000_000_000


@dataclass
class Rig:
    """A pipeline on the real redis-server, with its metrics, and a plain client to break
    Redis with."""

    pipeline: Pipeline
    recommender: Recommender
    metrics: Metrics
    store: RedisStore
    redis: redis.Redis
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def dead_count(self, reason: str) -> float:
        return self.metrics.dlq_events.labels(reason=reason)._value.get()


@pytest.fixture
def rig(settings, shop_model) -> Iterator[Callable[..., Rig]]:
    """``rig(RecommenderClass)``: a pipeline with that recommender on the shop model; the
    catalog is in Redis."""
    made: list[Rig] = []

    def make(recommender_type: type[Recommender] = Recommender) -> Rig:
        loop = asyncio.new_event_loop()
        metrics = Metrics(CollectorRegistry())
        store = RedisStore.from_settings(settings)
        index = FaissItemIndex.load(shop_model.model_dir / "index")
        recommender = recommender_type(shop_model.model, index, Catalog())
        pipeline = Pipeline(settings, recommender, store, metrics, clock=lambda: NOW)
        client = redis.Redis.from_url(settings.redis_url.get_secret_value())
        made.append(Rig(pipeline, recommender, metrics, store, client, loop))
        made[-1].run(store.put_items(catalog_items(shop.catalog())))
        return made[-1]

    yield make
    for r in made:
        r.redis.close()
        r.run(r.pipeline.close())
        r.run(r.store.close())
        r.loop.close()


class ExplodingRecommender(Recommender):
    """Raises whenever user "boom" is in the batch, like a bug triggered by one event."""

    def recommend(
        self,
        states: Sequence[UserState],
        trigger_event_ids: Sequence[str],
        now_ms: int,
        stats: ItemStats | None = None,
    ) -> list[Ranked]:
        if any(s.user_id == "boom" for s in states):
            msg = "corrupt vector"
            raise FloatingPointError(msg)
        return super().recommend(states, trigger_event_ids, now_ms, stats=stats)


class PickyRecommender(Recommender):
    """Fails to index one item, like an item whose text breaks the encoder."""

    def apply_item(self, item: Item) -> CatalogChange:
        if item.item_id == "cursed":
            msg = "cannot encode this title"
            raise ValueError(msg)
        return super().apply_item(item)


def event(event_id: str, user: str, item: str = "books-1") -> RawMessage:
    body = {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "ts": NOW}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, int(event_id[1:]))


def triggers(result: Any) -> list[str]:
    return [json.loads(r.value)["trigger_event_id"] for r in result.recommendations]


def test_a_failing_event_is_dead_lettered_and_its_batch_mates_are_served(rig):
    r = rig(ExplodingRecommender)
    result = r.run(
        r.pipeline.handle_events([event("e1", "ann"), event("e2", "boom"), event("e3", "bob")])
    )
    assert triggers(result) == ["e1", "e3"]
    [dead] = result.dead_letters
    record = json.loads(dead.value)
    assert record["reason"] == "processing_error"
    assert "FloatingPointError: corrupt vector" in record["error"]
    assert record["source"]["offset"] == 2
    assert r.dead_count("processing_error") == 1


def test_a_redis_reply_no_retry_can_change_dead_letters_only_its_event(rig):
    """A key of the wrong type (WRONGTYPE) fails the batch's Redis script; the batch is
    redone event by event, so only that user's event goes to the DLQ, and nothing is
    dropped: the agent acknowledges the batch once handle_events returns."""
    r = rig()
    r.redis.set(user_key("clobbered", "h"), "not a list")
    result = r.run(
        r.pipeline.handle_events([event("e1", "ann"), event("e2", "clobbered"), event("e3", "bob")])
    )
    assert triggers(result) == ["e1", "e3"]
    [dead] = result.dead_letters
    record = json.loads(dead.value)
    assert record["reason"] == "processing_error"
    assert "WRONGTYPE" in record["error"]
    assert record["source"]["offset"] == 2
    assert dead.key == b"clobbered"


def test_a_forget_request_that_fails_is_dead_lettered_to_be_sent_again(rig):
    r = rig()
    r.redis.set(experiment_key("old", "a", "lists"), "not a hash")  # HDEL: WRONGTYPE
    request = json.dumps({"type": "forget", "user_id": "leaving"}).encode()
    [dead] = r.run(r.pipeline.handle_control([RawMessage(request, b"leaving", "control", 0, 7)]))
    record = json.loads(dead.value)
    assert record["reason"] == "processing_error"
    assert "WRONGTYPE" in record["error"]
    assert base64.b64decode(record["original_b64"]) == request
    assert r.dead_count("processing_error") == 1


def test_an_item_that_cannot_be_applied_is_counted_and_the_others_are_indexed(rig):
    r = rig(PickyRecommender)
    new = [Item("cursed", "Cursed Lamp", "home"), Item("blessed", "Blessed Lamp", "home")]
    messages = [
        RawMessage(encode_item(item), item.item_id.encode(), "items", 0, n)
        for n, item in enumerate(new)
    ]
    assert r.run(r.pipeline.handle_items(messages)) == []
    assert r.metrics.items_updated.labels(action="failed")._value.get() == 1
    assert "blessed" in r.recommender.catalog
    assert r.run(r.pipeline.sync_catalog()) == 0  # the sync went on past the failed item


def test_item_messages_that_cannot_be_stored_are_dead_lettered_to_be_sent_again(rig):
    r = rig()
    r.redis.set(CATALOG, "not a hash")  # the shared catalog clobbered: WRONGTYPE
    lamp = encode_item(Item("lamp", "Desk Lamp", "home"))
    [dead] = r.run(r.pipeline.handle_items([RawMessage(lamp, b"lamp", "items", 0, 3)]))
    record = json.loads(dead.value)
    assert (record["reason"], record["source"]["offset"]) == ("processing_error", 3)
    assert "WRONGTYPE" in record["error"]
    assert dead.key == b"lamp"


HOSTILE = st.one_of(
    st.binary(max_size=300),  # arbitrary bytes, invalid UTF-8 included
    st.builds(
        lambda body: json.dumps(body).encode(),
        st.fixed_dictionaries(
            {
                "event_id": st.one_of(st.text(max_size=300), st.integers(), st.none()),
                "user_id": st.one_of(st.text(min_size=1, max_size=300), st.just("x" * 5000)),
                "item_id": st.sampled_from(["books-1", "running-2", "no-such-item", ""]),
                "type": st.sampled_from(["view", "purchase", "teleport", ""]),
                "ts": st.one_of(
                    st.integers(min_value=-(2**63), max_value=2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True),
                ),
            }
        ),
    ),
    st.just(b'{"context":' * 3000 + b"1" + b"}" * 3000),  # deeply nested
    st.just(b'{"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": NaN}'),
)


def test_any_batch_of_hostile_messages_is_answered_or_dead_lettered_one_for_one(rig):
    """Property: whatever arrives, every message gets a list or a dead letter with a known
    reason, the DLQ counter moves by reason, and the pipeline keeps going."""
    r = rig()
    known = {"too_large", "invalid_json", "schema", "bad_timestamp", "unknown_item"}
    runs = []

    @hyp_settings(max_examples=150, deadline=None)
    @given(st.lists(HOSTILE, min_size=1, max_size=12), st.booleans())
    def check(raws: list[bytes], with_valid: bool) -> None:
        messages = [RawMessage(raw, None, "events", 0, n) for n, raw in enumerate(raws)]
        if with_valid:
            messages.append(event(f"e{len(runs) * 100 + 99}", f"ok-{len(runs)}"))
        before = {reason: r.dead_count(reason) for reason in known}
        result = r.run(r.pipeline.handle_events(messages))
        runs.append(len(messages))
        assert len(result.recommendations) + len(result.dead_letters) == len(messages)
        reasons = [json.loads(d.value)["reason"] for d in result.dead_letters]
        assert set(reasons) <= known
        for reason in known:
            assert r.dead_count(reason) - before[reason] == reasons.count(reason)
        if with_valid:
            assert result.recommendations, "a valid event in a hostile batch is still served"

    check()
    assert len(runs) >= 100  # hypothesis really ran (cases counted in the note)
