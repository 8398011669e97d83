"""Redis adapter: user state, latest recommendations and the shared catalog.

Keys (``{u:USER}`` is a Redis Cluster hash tag, so one user's keys share a slot):

====================================  =============================================
``sr:{u:USER}:h``                     list of recent interactions, JSON [item, type, ts]
``sr:{u:USER}:p``                     set of purchased item ids
``sr:{u:USER}:s``                     set of every item id the user interacted with
``sr:{u:USER}:ev:EVENT_ID``           dedupe marker with TTL (idempotent replays)
``sr:{u:USER}:emb``                   float32 bytes of the latest user vector
``sr:{u:USER}:recs``                  latest recommendation message (JSON)
``sr:catalog``                        hash item_id -> item JSON
``sr:catalog:log``                    stream of item ids in change order
====================================  =============================================

Every user-state update is one Lua script (dedupe + append + trim + purchase) so a
replayed event has exactly-once effect. Connection failures are retried with capped
exponential backoff and counted; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import numpy as np
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from engine.state import Applied
from engine.types import Event, Interaction, Item, Recommendation, UserState
from stream.contracts import decode_item, encode_item, encode_recommendation

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)

_APPLY = """
local applied = 0
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
  if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end
  redis.call('SADD', KEYS[4], ARGV[5])
  applied = 1
end
return {applied, redis.call('LRANGE', KEYS[1], 0, -1), redis.call('SMEMBERS', KEYS[2]),
        redis.call('SMEMBERS', KEYS[4])}
"""

_decode_entry = msgspec.json.Decoder(tuple[str, str, int]).decode
_encode = msgspec.json.Encoder().encode


def user_key(user_id: str, suffix: str) -> str:
    return f"sr:{{u:{user_id}}}:{suffix}"


CATALOG = "sr:catalog"
CATALOG_LOG = "sr:catalog:log"


class RedisStore:
    """Async Redis-backed user store (implements ``engine.state.UserStore``) and catalog."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        history_length: int,
        dedupe_ttl_s: int,
        recommendation_ttl_s: int,
        retry_max_s: float = 5.0,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        # redis-py's stubs type every reply as bytes | str | None; replies here are bytes
        # (decode_responses is off), so the client is used untyped.
        self.client: Any = client
        self.history_length = history_length
        self.dedupe_ttl_s = dedupe_ttl_s
        self.recommendation_ttl_s = recommendation_ttl_s
        self.retry_max_s = retry_max_s
        self._on_error = on_error
        self._apply_script = client.register_script(_APPLY)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, **kwargs)

    async def close(self) -> None:
        await self.client.aclose()

    async def retrying(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, backing off on connection errors."""
        delay = 0.05
        while True:
            try:
                return await call()
            except RETRYABLE as exc:
                if self._on_error is not None:
                    self._on_error(op, exc)
                log.warning(
                    "redis %s failed (%s); retrying in %.2fs", op, type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # -- user state ---------------------------------------------------------------

    async def apply(self, events: Sequence[Event]) -> list[Applied]:
        """Apply events in order in one pipelined round-trip; see ``engine.state``."""

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in events:
                    entry = _encode([e.item_id, e.type, e.ts])
                    await self._apply_script(
                        keys=[
                            user_key(e.user_id, "h"),
                            user_key(e.user_id, "p"),
                            user_key(e.user_id, f"ev:{e.event_id}"),
                            user_key(e.user_id, "s"),
                        ],
                        args=[
                            entry,
                            e.item_id if e.type == "purchase" else "",
                            self.history_length,
                            self.dedupe_ttl_s,
                            e.item_id,
                        ],
                        client=pipe,
                    )
                return list(await pipe.execute())

        if not events:
            return []
        replies = await self.retrying("apply", run)
        return [
            Applied(_state(e.user_id, r[1], r[2], r[3]), bool(r[0]))
            for e, r in zip(events, replies, strict=True)
        ]

    async def get(self, user_id: str) -> UserState:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(user_key(user_id, "h"), 0, -1)
                pipe.smembers(user_key(user_id, "p"))
                pipe.smembers(user_key(user_id, "s"))
                return list(await pipe.execute())

        history, purchased, seen = await self.retrying("get", run)
        return _state(user_id, history, purchased, seen)

    async def save_results(self, ranked: Sequence[tuple[Recommendation, np.ndarray]]) -> None:
        """Store each user's latest list and vector (last one wins within a batch)."""

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for rec, vector in ranked:
                    ttl = self.recommendation_ttl_s
                    pipe.set(user_key(rec.user_id, "recs"), encode_recommendation(rec), ex=ttl)
                    pipe.set(
                        user_key(rec.user_id, "emb"), vector.astype(np.float32).tobytes(), ex=ttl
                    )
                await pipe.execute()

        if ranked:
            await self.retrying("save", run)

    async def latest_recommendation(self, user_id: str) -> bytes | None:
        async def run() -> Any:
            return await self.client.get(user_key(user_id, "recs"))

        value = await self.retrying("latest", run)
        return None if value is None else bytes(value)

    async def user_vector(self, user_id: str) -> np.ndarray | None:
        value = await self.retrying("vector", lambda: self.client.get(user_key(user_id, "emb")))
        return None if value is None else np.frombuffer(value, dtype=np.float32)

    async def forget(self, user_id: str) -> None:
        """Delete every key of this user (history, purchases, dedupe markers, outputs)."""

        async def run() -> None:
            keys = [k async for k in self.client.scan_iter(match=f"sr:{{u:{user_id}}}:*")]
            if keys:
                await self.client.delete(*keys)

        await self.retrying("forget", run)

    # -- catalog ------------------------------------------------------------------

    async def put_items(self, items: Sequence[Item]) -> None:
        async def run() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                for item in items:
                    pipe.hset(CATALOG, item.item_id, encode_item(item))
                    pipe.xadd(CATALOG_LOG, {"item_id": item.item_id}, maxlen=1_000_000)
                await pipe.execute()

        if items:
            await self.retrying("catalog_put", run)

    async def catalog_snapshot(self) -> tuple[list[Item], str]:
        """Every item plus the change-log position to follow from (``0-0`` if empty)."""

        async def run() -> tuple[list[Item], str]:
            last = await self.client.xrevrange(CATALOG_LOG, count=1)
            position = last[0][0].decode() if last else "0-0"
            raw = await self.client.hvals(CATALOG)
            return [decode_item(bytes(v), max_bytes=1 << 20) for v in raw], position

        return await self.retrying("catalog_snapshot", run)

    async def catalog_changes(self, position: str, count: int = 5000) -> tuple[list[Item], str]:
        """Items changed after ``position`` (latest version of each) and the new position."""

        async def run() -> tuple[list[Item], str]:
            entries = await self.client.xrange(CATALOG_LOG, min=f"({position}", count=count)
            if not entries:
                return [], position
            ids = list(dict.fromkeys(fields[b"item_id"].decode() for _, fields in entries))
            raw = await self.client.hmget(CATALOG, ids)
            items = [decode_item(bytes(v), max_bytes=1 << 20) for v in raw if v is not None]
            return items, entries[-1][0].decode()

        return await self.retrying("catalog_changes", run)


def _state(user_id: str, history: Sequence[bytes], purchased: Any, seen: Any) -> UserState:
    interactions = []
    for raw in history:
        item_id, type_, ts = _decode_entry(raw)
        interactions.append(Interaction(item_id, type_, ts))  # type: ignore[arg-type]
    return UserState(user_id, tuple(interactions), _strings(purchased), _strings(seen))


def _strings(members: Any) -> frozenset[str]:
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
