"""One specification of user state, run against Redis (real server) and the in-memory twin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis as redis_sync

from streamrec.engine.serving.state import InMemoryUserStore, UserStore
from streamrec.engine.types import Event, Interaction
from streamrec.stream.cli.local_infra import start_redis
from streamrec.stream.redis_store import RedisStore

HISTORY = 5


_loop = asyncio.new_event_loop()


def run(coro):  # type: ignore[no-untyped-def]
    """One event loop for the whole module: async Redis connections belong to a loop."""
    return _loop.run_until_complete(coro)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[UserStore]:
    if request.param == "memory":
        yield InMemoryUserStore(HISTORY)
        return
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    s = RedisStore.from_url(url, history_length=HISTORY, dedupe_ttl_s=600, recommendation_ttl_s=600)
    yield s
    run(s.close())


def ev(n: int, user: str = "u1", item: str | None = None, kind: str = "view") -> Event:
    return Event(f"e{n}", user, item or f"i{n}", kind, 1000 + n)  # type: ignore[arg-type]


class TestUserStoreContract:
    def test_history_is_kept_oldest_first(self, store):
        out = run(store.apply([ev(1), ev(2), ev(3)]))
        assert out[-1].state.history == (
            Interaction("i1", "view", 1001),
            Interaction("i2", "view", 1002),
            Interaction("i3", "view", 1003),
        )

    def test_each_result_is_the_state_right_after_its_event(self, store):
        out = run(store.apply([ev(1), ev(2)]))
        assert [len(o.state.history) for o in out] == [1, 2]

    def test_history_is_bounded(self, store):
        out = run(store.apply([ev(n) for n in range(12)]))
        assert [i.item_id for i in out[-1].state.history] == [f"i{n}" for n in range(7, 12)]

    def test_purchases_are_remembered_beyond_the_history_window(self, store):
        run(store.apply([ev(0, item="bought", kind="purchase")]))
        run(store.apply([ev(n) for n in range(1, 12)]))
        assert run(store.get("u1")).purchased == frozenset({"bought"})

    def test_a_replayed_event_has_no_second_effect(self, store):
        first = run(store.apply([ev(1), ev(2)]))
        again = run(store.apply([ev(2), ev(1)]))
        assert [o.applied for o in first] == [True, True]
        assert [o.applied for o in again] == [False, False]
        assert len(run(store.get("u1")).history) == 2

    def test_users_do_not_share_state(self, store):
        run(store.apply([ev(1, "a"), ev(2, "b", kind="purchase")]))
        assert [i.item_id for i in run(store.get("a")).history] == ["i1"]
        assert run(store.get("a")).purchased == frozenset()

    def test_forget_removes_everything_of_a_user(self, store):
        run(store.apply([ev(1, "a", kind="purchase"), ev(2, "b")]))
        run(store.forget("a"))
        assert run(store.get("a")).history == ()
        assert run(store.get("a")).purchased == frozenset()
        assert len(run(store.get("b")).history) == 1
        # forgotten event ids may be sent again and count as new
        assert run(store.apply([ev(1, "a")]))[0].applied

    def test_a_forget_request_keeps_its_older_events_from_coming_back(self, store):
        run(store.apply([ev(1, "a"), ev(2, "a")]))
        run(store.forget("a", until_ms=ev(5).ts))
        late, replayed, newer = run(store.apply([ev(3, "a"), ev(1, "a"), ev(6, "a")]))
        assert late.forgotten
        assert replayed.forgotten
        assert not late.applied
        assert late.state.history == ()
        assert newer.applied
        assert not newer.forgotten
        assert [i.item_id for i in run(store.get("a")).history] == ["i6"]

    @pytest.mark.parametrize("alice_first", [True, False])
    def test_a_user_id_that_spells_another_users_key_keeps_its_own_state(self, store, alice_first):
        # Keys are sr:{u:USER}:SUFFIX. Unescaped, "A}:ev:Z"'s history key was user A's
        # dedupe key for event "Z}:h": one of the two events was lost or failed.
        alice = Event("Z}:h", "A", "i1", "view", 1001)
        mallory = Event("m1", "A}:ev:Z", "i2", "view", 1002)
        out = run(store.apply([alice, mallory] if alice_first else [mallory, alice]))
        assert [o.applied for o in out] == [True, True]
        assert [i.item_id for i in run(store.get("A")).history] == ["i1"]
        assert [i.item_id for i in run(store.get("A}:ev:Z")).history] == ["i2"]
        run(store.forget("A"))
        assert run(store.get("A")).history == ()
        assert [i.item_id for i in run(store.get("A}:ev:Z")).history] == ["i2"]


@pytest.mark.integration
def test_forget_leaves_no_key_of_the_user_in_redis(redis_url):
    store = RedisStore.from_url(
        redis_url, history_length=5, dedupe_ttl_s=600, recommendation_ttl_s=600
    )
    run(store.apply([ev(1, "gone", kind="purchase"), ev(2, "kept")]))
    run(store.forget("gone"))
    run(store.close())
    keys = [k.decode() for k in redis_sync.Redis.from_url(redis_url).keys("*")]
    assert keys
    assert not any("gone" in k for k in keys)


@pytest.mark.integration
def test_redis_outage_is_retried_counted_and_nothing_is_lost(tmp_path: Path):
    """Redis goes away mid-stream; apply() waits, counts errors and completes when it is back."""
    service = start_redis(tmp_path / "r")
    port = service.address.rsplit(":", 1)[1].split("/")[0]
    errors: list[str] = []
    store = RedisStore.from_url(
        service.address,
        history_length=10,
        dedupe_ttl_s=600,
        recommendation_ttl_s=600,
        retry_max_s=0.2,
        on_error=lambda op, exc: errors.append(op),
    )

    async def scenario() -> list[bool]:
        await store.apply([ev(1)])
        service.stop()
        pending = asyncio.create_task(store.apply([ev(2), ev(3)]))
        await asyncio.sleep(1.0)
        assert not pending.done()
        restarted = await asyncio.to_thread(start_redis, tmp_path / "r", {"REDIS_PORT": port})
        try:
            out = await asyncio.wait_for(pending, 20)
            # The server came back empty (no persistence): what was sent after the outage
            # is all there, in order, exactly once.
            return [o.applied for o in out] + [len(out[-1].state.history) == 2]
        finally:
            await store.close()
            await asyncio.to_thread(restarted.stop)

    assert run(scenario()) == [True, True, True]
    assert errors
    assert set(errors) == {"apply"}


@pytest.fixture
def full_redis(redis_url: str) -> Iterator[redis_sync.Redis]:
    """The session redis-server, to be filled up: the test sets maxmemory; restored after."""
    client = redis_sync.Redis.from_url(redis_url)
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "noeviction")
    yield client
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", policy)
    client.close()


@pytest.mark.integration
def test_redis_out_of_memory_holds_the_events_until_there_is_room(redis_url, full_redis):
    """A full Redis refuses writes (OOM); apply() waits, counts and completes once a
    client or an operator frees memory, with every event applied once."""
    errors: list[str] = []
    store = RedisStore.from_url(
        redis_url,
        history_length=10,
        dedupe_ttl_s=600,
        recommendation_ttl_s=600,
        retry_max_s=0.2,
        on_error=lambda op, exc: errors.append(f"{op}:{type(exc).__name__}"),
    )

    async def scenario() -> list[bool]:
        await store.apply([ev(1)])
        full_redis.config_set("maxmemory", 1)  # every write is refused from now on
        pending = asyncio.create_task(store.apply([ev(2), ev(3)]))
        await asyncio.sleep(1.0)
        assert not pending.done()
        full_redis.config_set("maxmemory", 0)
        try:
            out = await asyncio.wait_for(pending, 20)
            return [o.applied for o in out] + [len(out[-1].state.history) == 3]
        finally:
            await store.close()

    assert run(scenario()) == [True, True, True]
    assert set(errors) == {"apply:OutOfMemoryError"}


@pytest.mark.integration
def test_a_forget_refused_by_a_full_redis_deletes_nothing_until_it_can_finish(
    redis_url, full_redis
):
    """The forgotten marker is written first: while Redis refuses it, the user's keys stay
    whole (the request is retried), and once done a late event cannot bring them back."""
    store = RedisStore.from_url(
        redis_url, history_length=10, dedupe_ttl_s=600, recommendation_ttl_s=600, retry_max_s=0.2
    )

    async def scenario() -> tuple[int, int, bool]:
        await store.apply([ev(1, "leaving"), ev(2, "leaving")])
        full_redis.config_set("maxmemory", 1)
        pending = asyncio.create_task(store.forget("leaving", until_ms=ev(5).ts))
        await asyncio.sleep(1.0)
        assert not pending.done()
        while_blocked = len((await store.get("leaving")).history)
        full_redis.config_set("maxmemory", 0)
        try:
            await asyncio.wait_for(pending, 20)
            late = (await store.apply([ev(3, "leaving")]))[0]
            return while_blocked, len((await store.get("leaving")).history), late.forgotten
        finally:
            await store.close()

    assert run(scenario()) == (2, 0, True)


class TestSeenItems:
    def test_every_item_is_remembered_beyond_the_history_window(self, store):
        run(store.apply([ev(n) for n in range(12)]))
        state = run(store.get("u1"))
        assert len(state.history) == HISTORY
        assert state.seen == frozenset(f"i{n}" for n in range(12))

    def test_a_replayed_event_adds_nothing(self, store):
        run(store.apply([ev(1)]))
        out = run(store.apply([ev(1)]))
        assert out[0].state.seen == frozenset({"i1"})


@pytest.mark.integration
def test_impressions_are_counted_per_item_and_reach_the_next_state(redis_url):
    from streamrec.engine.types import Recommendation, RecommendedItem

    async def scenario() -> tuple[dict[str, int], dict[str, int], int]:
        store = RedisStore.from_url(
            redis_url,
            history_length=HISTORY,
            dedupe_ttl_s=600,
            recommendation_ttl_s=600,
            impressions_window_s=3600,
        )
        try:

            def listed(*items: str) -> Recommendation:
                ranked = tuple(
                    RecommendedItem(i, n, 1.0, "text", "popular", {}) for n, i in enumerate(items)
                )
                return Recommendation("imp", "t", 1, "v", ranked)

            vector = np.zeros(2, dtype=np.float32)
            await store.save_results([(listed("a", "b"), vector, 0), (listed("a"), vector, 0)])
            after_event = (await store.apply([ev(1, user="imp")]))[0].state.shown
            read = (await store.get("imp")).shown
            ttl = await store.client.ttl("sr:{u:imp}:shown")
            return after_event, read, ttl
        finally:
            await store.close()

    after_event, read, ttl = run(scenario())
    assert after_event == read == {"a": 2, "b": 1}
    assert 0 < ttl <= 3600


@pytest.mark.integration
def test_without_an_impressions_window_nothing_is_counted(redis_url):
    from streamrec.engine.types import Recommendation, RecommendedItem

    async def scenario() -> dict[str, int]:
        store = RedisStore.from_url(
            redis_url, history_length=HISTORY, dedupe_ttl_s=600, recommendation_ttl_s=600
        )
        try:
            item = RecommendedItem("a", 1, 1.0, "text", "popular", {})
            rec = Recommendation("quiet", "t", 1, "v", (item,))
            await store.save_results([(rec, np.zeros(2, dtype=np.float32), 0)])
            return dict((await store.get("quiet")).shown)
        finally:
            await store.close()

    assert run(scenario()) == {}


@pytest.mark.integration
def test_forget_treats_the_user_id_as_text_not_as_a_pattern(redis_url):
    store = RedisStore.from_url(
        redis_url, history_length=5, dedupe_ttl_s=600, recommendation_ttl_s=600
    )
    run(store.apply([ev(1, "alice"), ev(2, "a*"), ev(3, "a?ice")]))
    assert run(store.forget("a*")) >= 2  # its history, seen set and dedupe marker
    assert run(store.forget("a?ice")) >= 2
    assert len(run(store.get("alice")).history) == 1
    run(store.close())


@pytest.mark.integration
def test_with_a_pseudonym_key_no_user_id_reaches_redis(redis_url):
    from pydantic import SecretStr

    from streamrec.engine.types import Recommendation
    from streamrec.stream.pseudonyms import pseudonymiser

    def keyed(key: str) -> RedisStore:
        return RedisStore.from_url(
            redis_url,
            history_length=5,
            dedupe_ttl_s=600,
            recommendation_ttl_s=600,
            pseudonym=pseudonymiser(SecretStr(key)),
        )

    user = "alice@example.com"
    store = keyed("k1")
    run(store.apply([ev(1, user, kind="purchase"), ev(2, user)]))
    rec = Recommendation(user, "e2", 5, "m1", ())
    run(store.save_results([(rec, np.ones(2, dtype=np.float32), ev(2).ts)]))
    assert [i.item_id for i in run(store.get(user)).history] == ["i1", "i2"]
    client = redis_sync.Redis.from_url(redis_url)
    keys = client.keys("*")
    assert any(k.startswith(b"sr:{u:u1.") for k in keys)
    for key in keys:
        assert user.encode() not in key
        if client.type(key) == b"string":
            assert user.encode() not in client.get(key)
    assert b'"user_id":"alice@example.com"' in run(store.latest_recommendation(user))
    # The same id under another key is another pseudonym: nothing of alice's is found.
    other = keyed("k2")
    assert run(other.get(user)).history == ()
    run(store.forget(user))
    assert not [k for k in client.keys("*") if k.startswith(b"sr:{u:")]
    run(store.close())
    run(other.close())
    client.close()


@pytest.mark.integration
def test_a_store_keyed_unlike_the_workers_knows_it(redis_url):
    from pydantic import SecretStr

    from streamrec.stream.pseudonyms import pseudonymiser

    def store(key: str | None) -> RedisStore:
        return RedisStore.from_url(
            redis_url,
            history_length=5,
            dedupe_ttl_s=600,
            recommendation_ttl_s=600,
            pseudonym=pseudonymiser(None if key is None else SecretStr(key)),
        )

    plain, k1, k2 = store(None), store("k1"), store("k2")
    assert run(k1.pseudonym_mismatch()) is None  # nothing recorded yet: no verdict
    run(k1.mark_pseudonyms())  # what a worker does at start
    assert run(k1.pseudonym_mismatch()) is None
    assert "no key is set here" in run(plain.pseudonym_mismatch())
    assert "under another STREAMREC_USER_ID_HMAC_KEY" in run(k2.pseudonym_mismatch())
    run(plain.mark_pseudonyms())
    assert "plain user ids" in run(k1.pseudonym_mismatch())
    client = redis_sync.Redis.from_url(redis_url)
    run(k1.mark_pseudonyms())
    assert b"k1" not in client.get("sr:pseudonyms")  # a fingerprint, not the key
    client.close()
    for s in (plain, k1, k2):
        run(s.close())


def test_the_pseudonym_examples_hold():
    import doctest

    import streamrec.stream.pseudonyms

    assert doctest.testmod(streamrec.stream.pseudonyms).failed == 0
