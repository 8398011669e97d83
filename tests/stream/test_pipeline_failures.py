"""Failures inside the worker's pipeline: isolated, dead-lettered, counted; never fatal.

Driven directly (no Faust) against the real redis-server; Kafka is not involved here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from engine.catalog import Catalog
from engine.item_stats import ItemStats
from engine.recommender import Ranked, Recommender
from engine.types import UserState
from index.faiss_index import FaissItemIndex
from stream.metrics import Metrics
from stream.pipeline import Pipeline, RawMessage
from stream.redis_store import RedisStore
from stream.replay import catalog_items
from tests import shop

pytestmark = pytest.mark.integration


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


def event(event_id: str, user: str, item: str = "books-1") -> RawMessage:
    body = {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "type": "view",
        "ts": 1_700_000_000_000,
    }
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, int(event_id[1:]))


def test_a_failing_event_is_dead_lettered_and_its_batch_mates_are_served(settings, shop_model):
    loop = asyncio.new_event_loop()
    metrics = Metrics(CollectorRegistry())
    store = RedisStore.from_url(
        settings.redis_url.get_secret_value(),
        history_length=10,
        dedupe_ttl_s=60,
        recommendation_ttl_s=60,
    )
    index = FaissItemIndex.load(shop_model.model_dir / "index")
    recommender = ExplodingRecommender(shop_model.model, index, Catalog())
    pipeline = Pipeline(settings, recommender, store, metrics, clock=lambda: 1_700_000_000_000)
    try:
        loop.run_until_complete(store.put_items(catalog_items(shop.catalog())))
        result = loop.run_until_complete(
            pipeline.handle_events([event("e1", "ann"), event("e2", "boom"), event("e3", "bob")])
        )
        assert [json.loads(r.value)["trigger_event_id"] for r in result.recommendations] == [
            "e1",
            "e3",
        ]
        [dead] = result.dead_letters
        record = json.loads(dead.value)
        assert record["reason"] == "processing_error"
        assert "FloatingPointError: corrupt vector" in record["error"]
        assert record["source"]["offset"] == 2
        assert metrics.dlq_events.labels(reason="processing_error")._value.get() == 1
    finally:
        loop.run_until_complete(pipeline.close())
        loop.run_until_complete(store.close())
        loop.close()
