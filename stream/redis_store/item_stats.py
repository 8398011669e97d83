"""Item statistics shared by all users: trending items and co-occurrence counts."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from redis import exceptions as redis_errors

from streamrec.engine.serving.item_stats import ItemStats, TrendParams, trending
from streamrec.stream.redis_store.connection import RedisConnection
from streamrec.stream.redis_store.replies import counts, scored

log = logging.getLogger(__name__)


class ItemStatsStore(RedisConnection):
    """Reads of the trend and co-occurrence sorted sets (written by the apply script)."""

    async def trending_items(self, now_ms: int, limit: int) -> list[tuple[str, float]]:
        """The ``limit`` items with the highest decayed event counts at ``now_ms``, with
        those counts, highest first."""

        [rows] = await self.retrying(
            "item_stats", lambda: self._highest([self.keys.trend], limit, limit)
        )
        params = TrendParams(half_life_s=self.trend_half_life_s, top_n=max(limit, 1))
        ranked = trending(scored(rows), now_ms, dataclasses.replace(params, min_count=0.0))
        return [(t.item_id, t.count) for t in ranked.values()]

    async def cooccurring(
        self, item_ids: Sequence[str], kind: str, limit: int
    ) -> dict[str, dict[str, int]]:
        """For each item, its ``limit`` most frequent partners and their counts.

        Args:
            item_ids: the items to look up.
            kind: ``"bought"`` or ``"viewed"`` (together).
            limit: most partners per item.
        """
        if kind not in ("bought", "viewed"):
            msg = f"kind must be 'bought' or 'viewed', got {kind!r}"
            raise ValueError(msg)
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        keys = [self.keys.cooccurrence(kind[0], item_id) for item_id in ids]
        replies = await self.retrying("item_stats", lambda: self._highest(keys, limit, limit))
        return {i: counts(r) for i, r in zip(ids, replies, strict=True) if r}

    async def _highest(self, keys: Sequence[str], first: int, rest: int) -> list[Any]:
        """The ``first`` highest members of ``keys[0]`` and the ``rest`` highest of each
        other key, with scores, as raw replies
        (:data:`~streamrec.stream.redis_store.scripts.TOPS`), in one round-trip."""
        if not self.cluster:
            return list(await self.run_script("tops", keys, [first, rest]))
        async with self.client.pipeline(transaction=False) as pipe:  # one slot per call
            for n, key in enumerate(keys):
                await self.run_script("tops", [key], [first if n == 0 else rest, rest], pipe)
            return [reply[0] for reply in await pipe.execute()]

    async def item_stats(
        self, session_items: Iterable[str], now_ms: int, params: TrendParams, co_limit: int
    ) -> ItemStats:
        """Trending items and both co-occurrence tables of ``session_items``, in one
        round-trip, as plain data for the recommender.

        A Redis error other than a lost connection (retried) gives empty statistics and
        is reported through ``on_stats_error("read")``; the batch is still ranked.
        """
        ids = list(dict.fromkeys(session_items))

        keys = [self.keys.trend]
        for item_id in ids:
            keys += [self.keys.cooccurrence("b", item_id), self.keys.cooccurrence("v", item_id)]

        try:
            replies = await self.retrying(
                "item_stats", lambda: self._highest(keys, params.top_n, co_limit)
            )
        except redis_errors.RedisError:
            log.exception("reading item statistics failed; ranking without them")
            if self._on_stats_error is not None:
                self._on_stats_error("read")
            return ItemStats(half_life_s=params.half_life_s)
        trend, rest = replies[0], replies[1:]
        bought = {i: counts(r) for i, r in zip(ids, rest[0::2], strict=True) if r}
        viewed = {i: counts(r) for i, r in zip(ids, rest[1::2], strict=True) if r}
        return ItemStats(
            trending=trending(scored(trend), now_ms, params),
            half_life_s=params.half_life_s,
            bought_together=bought,
            viewed_together=viewed,
        )
