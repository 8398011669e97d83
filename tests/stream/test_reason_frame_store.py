"""The reason writer's sentence frames in Redis (real redis-server, and a real Redis
Cluster): what one writer learned, the next one loads, per model and language."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.upgrade import ReasonUpgrader
from streamrec.engine.types import Recommendation, RecommendedItem
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.redis_store import reason_frames as frames_module
from streamrec.stream.settings import Settings
from streamrec.stream.worker.reason_writer import model_tag

pytestmark = pytest.mark.integration


def store_for(url: str) -> RedisStore:
    return RedisStore.from_url(url, history_length=20, dedupe_ttl_s=600, recommendation_ttl_s=600)


def a_list(user: str, title: str) -> Recommendation:
    evidence = {"items": [{"item_id": title, "title": title, "event": "view", "share": 1.0}]}
    item = RecommendedItem("i1", 1, 1.0, "template", "similar_to_recent", evidence)
    return Recommendation(user, f"e-{user}", 1_000, "m1", (item,))


def test_frames_one_writer_learned_are_loaded_by_the_next(redis_url: str) -> None:
    asked: list[int] = []

    def model(prompts, timeout_s):  # type: ignore[no-untyped-def]
        asked.append(len(prompts))
        return ["Picked because you viewed [ITEM 1]" for _ in prompts]

    guard = Guard(["Trail Runner 3", "Ridge Jacket"])

    async def scenario() -> None:
        store = store_for(redis_url)
        try:
            first = ReasonUpgrader(model, guard)
            first.upgrade([a_list("ann", "Trail Runner 3")])
            learned = first.take_learned()
            assert len(learned) == 1
            assert first.take_learned() == {}  # taken once
            assert await store.save_reason_frames("m-a", "en", learned)
            # A later writer of the same model and language asks the model nothing.
            second = ReasonUpgrader(model, guard)
            second.preload(await store.load_reason_frames("m-a", "en"))
            [upgrade], stats = second.upgrade([a_list("bob", "Ridge Jacket")])
            assert upgrade.items[0].reason == "Picked because you viewed Ridge Jacket"
            assert stats.outcomes == {"cached": 1}
            assert asked == [1]
            # Another model or language starts empty; a rejection is kept as None.
            assert await store.load_reason_frames("m-b", "en") == {}
            assert await store.load_reason_frames("m-a", "zh") == {}
            assert await store.save_reason_frames("m-a", "zh", {"k": None})
            assert await store.load_reason_frames("m-a", "zh") == {"k": None}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_stored_frames_are_bounded(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames_module, "MAX_FRAMES", 2)

    async def scenario() -> None:
        store = store_for(redis_url)
        try:
            assert await store.save_reason_frames("m", "en", {"a": "A", "b": "B"})
            assert not await store.save_reason_frames("m", "en", {"c": "C"})
            assert await store.load_reason_frames("m", "en") == {"a": "A", "b": "B"}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_frames_are_one_key_on_a_redis_cluster(redis_cluster_url: str) -> None:
    async def scenario() -> None:
        store = store_for(redis_cluster_url)
        try:
            assert await store.save_reason_frames("m", "en", {"a": "A", "b": None})
            assert await store.load_reason_frames("m", "en") == {"a": "A", "b": None}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_each_model_stores_its_own_frames() -> None:
    local = Settings()
    server = Settings(reason_lm_url="http://gpu:8000", reason_lm_model="smollm2-1.7b")
    other = Settings(reason_lm_url="http://gpu:8000", reason_lm_model="qwen")
    assert len({model_tag(local), model_tag(server), model_tag(other)}) == 3
    assert model_tag(server) == model_tag(server.model_copy())
