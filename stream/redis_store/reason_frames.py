"""The reason writer's sentence frames, kept in Redis so that a restarted writer, or a
second one, starts with every frame already written (a CPU model needs minutes for them)."""

from __future__ import annotations

from collections.abc import Mapping

from streamrec.stream.redis_store.connection import RedisConnection
from streamrec.stream.redis_store.keys import reason_frames_key
from streamrec.stream.redis_store.replies import member

#: The most frames one model and language keep; beyond it new ones stay in memory only.
MAX_FRAMES = 50_000


class ReasonFrameStore(RedisConnection):
    """Frame sentences per (model, language): prompt key -> answer, or None (rejected)."""

    async def load_reason_frames(self, model: str, language: str) -> dict[str, str | None]:
        """Every stored frame answer ("" stored: a rejection, returned as None)."""
        key = reason_frames_key(model, language)

        async def run() -> dict[str, str | None]:
            raw = await self.client.hgetall(key)
            return {member(k): (member(v) or None) for k, v in raw.items()}

        return await self.retrying("reason_frames", run)

    async def save_reason_frames(
        self, model: str, language: str, answers: Mapping[str, str | None]
    ) -> bool:
        """Store new frame answers (None: rejected); False when the hash is full."""
        if not answers:
            return True
        key = reason_frames_key(model, language)

        async def run() -> bool:
            if await self.client.hlen(key) >= MAX_FRAMES:
                return False
            await self.client.hset(key, mapping={k: v or "" for k, v in answers.items()})
            return True

        return await self.retrying("reason_frames", run)
