"""A rebuilt index is swapped into a running pipeline without stopping it.

Driven directly (no Faust) with the real redis-server behind the store.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.recommender import Recommender
from streamrec.engine.types import Item
from streamrec.index.build import build_index
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import Pipeline, RawMessage
from tests import shop

pytestmark = pytest.mark.integration

NEW = Item("kitchen-new", "Copper Kettle Deluxe", "kitchen", ("kettle",))


def view(event_id: str, user: str, item: str) -> RawMessage:
    body = {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "ts": 1}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, 0)


def test_a_rebuilt_index_is_swapped_in_and_a_bad_one_is_kept_out(settings, shop_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(shop_model.model_dir, model_dir)
    settings = settings.model_copy(update={"model_dir": model_dir})
    loop = asyncio.new_event_loop()
    metrics = Metrics(CollectorRegistry())
    store = RedisStore.from_url(
        settings.redis_url.get_secret_value(), history_length=10, dedupe_ttl_s=60,
        recommendation_ttl_s=60,
    )  # fmt: skip
    recommender = Recommender(shop_model.model, FaissItemIndex.load(settings.index_dir), Catalog())
    for item in [*catalog_items(shop.catalog()), NEW]:
        recommender.apply_item(item)  # NEW is indexed from its text, online
    pipeline = Pipeline(
        settings,
        recommender,
        store,
        metrics,
        clock=lambda: 1_700_000_000_000,
        index_loader=lambda: FaissItemIndex.load(settings.index_dir),
    )
    swapped = metrics.index_reloads.labels(outcome="swapped")
    rejected = metrics.index_reloads.labels(outcome="rejected")
    try:
        assert not loop.run_until_complete(pipeline.reload_index())  # nothing rebuilt yet
        build_index(model_dir, "HNSW16", "cpu")
        assert loop.run_until_complete(pipeline.reload_index())
        assert recommender.index.factory == "HNSW16"
        assert "kitchen-new" in recommender.index  # the online addition survives the swap
        assert swapped._value.get() == 1
        assert not loop.run_until_complete(pipeline.reload_index())  # same build: no reload
        result = loop.run_until_complete(pipeline.handle_events([view("e1", "ann", "books-1")]))
        assert len(result.recommendations) == 1

        # An index of another dimension (another model) is refused once, the old one kept.
        other = FaissItemIndex(5)
        other.upsert(["x"], np.ones((1, 5), dtype=np.float32))
        other.save(settings.index_dir)
        assert not loop.run_until_complete(pipeline.reload_index())
        assert not loop.run_until_complete(pipeline.reload_index())
        assert rejected._value.get() == 1
        assert recommender.index.factory == "HNSW16"

        # A build caught half-written is tried again until it reads.
        build_index(model_dir, "Flat", "cpu")
        built = (settings.index_dir / "items.faiss").read_bytes()
        (settings.index_dir / "items.faiss").write_bytes(b"not an index")
        assert not loop.run_until_complete(pipeline.reload_index())
        assert rejected._value.get() == 2
        (settings.index_dir / "items.faiss").write_bytes(built)  # the ids file is unchanged
        assert loop.run_until_complete(pipeline.reload_index())
        assert recommender.index.factory == "Flat"
        assert swapped._value.get() == 2
    finally:
        loop.run_until_complete(pipeline.close())
        loop.run_until_complete(store.close())
        loop.close()
