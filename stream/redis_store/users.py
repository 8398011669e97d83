"""User state: history, purchases, seen items, dedupe markers, stored lists and vectors,
and forgetting a user.

A replayed event (its dedupe marker was already set) is looked up with :meth:`replayed`:
the marker says whether a list was stored for it and which list its save call left, so
the worker republishes the stored bytes, ranks again only where a list may be missing, or
publishes nothing where a newer list was published (:data:`ReplayAction`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from redis import exceptions as redis_errors

from streamrec.engine.serving.item_stats import log_weight
from streamrec.engine.serving.state import Applied
from streamrec.engine.types import Event, Recommendation, UserState
from streamrec.stream.contracts import encode_recommendation, recommendation_from_json
from streamrec.stream.redis_store.cluster_stats import (
    StatsLimits,
    event_member,
    flush_calls,
    markers,
    parse_plan,
)
from streamrec.stream.redis_store.connection import RedisConnection
from streamrec.stream.redis_store.keys import (
    COOCCURRENCE_PREFIX,
    EXPERIMENT_PER_USER,
    TREND,
    glob_escape,
    key_part,
    user_prefix,
)
from streamrec.stream.redis_store.replies import at_most, encode_json, member, user_state

log = logging.getLogger(__name__)

#: How long a flushed statistics marker set lives once its plans are deleted (cluster).
MARKER_GRACE_S = 900

#: What to do with a replayed event (see :data:`scripts.REPLAYED`): ``rank`` (no list was
#: stored for it: rank, store, publish), ``rank_only`` (a later event of its batch holds the
#: stored list: rank and publish, store nothing), ``republish`` (the stored list is its own:
#: publish those bytes) or ``skip`` (a later batch stored a newer list, so the event's own
#: list was published: nothing).
ReplayAction = Literal["rank", "rank_only", "republish", "skip"]


@dataclass(frozen=True)
class Replayed:
    """What to do with one replayed event, and the stored list to republish (with the
    user's own id in it)."""

    action: ReplayAction
    stored: bytes | None = None


class UserStateStore(RedisConnection):
    """Per-user keys, all in the user's hash slot."""

    async def apply(self, events: Sequence[Event], now_ms: int | None = None) -> list[Applied]:
        """Apply events in order in one pipelined round-trip (see
        :mod:`streamrec.engine.serving.state`).

        New events also count in the item statistics, at their ``ts`` but never later
        than ``now_ms`` (an event stamped in the future must not outweigh the present);
        on a cluster in a second round-trip (:mod:`.cluster_stats`).
        """
        if not events:
            return []
        flush_id = uuid.uuid4().hex[:16] if self.cluster else ""
        # On a cluster each event's statistics plan waits in its user's slot; on one node
        # the script updates the trend set (and the co-occurrence sets) itself.
        stats_keys = [
            self._key(e.user_id, f"st:{e.event_id}") if flush_id else TREND for e in events
        ]
        stale_plans = list(self._stale_plans)

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for e, stats_key in zip(events, stats_keys, strict=True):
                    entry = encode_json([e.item_id, e.type, e.ts])
                    await self.run_script(
                        "apply",
                        [
                            self._key(e.user_id, "h"),
                            self._key(e.user_id, "p"),
                            self._key(e.user_id, f"ev:{e.event_id}"),
                            self._key(e.user_id, "s"),
                            stats_key,
                            self._key(e.user_id, "shown"),
                            self._forgotten_key(e.user_id),
                        ],
                        [
                            entry,
                            e.item_id if e.type == "purchase" else "",
                            self.history_length,
                            self.dedupe_ttl_s,
                            e.item_id,
                            e.type,
                            repr(log_weight(at_most(e.ts, now_ms), self.trend_half_life_s)),
                            self.cooccurrence_window,
                            self.cooccurrence_max_members,
                            self.cooccurrence_ttl_s,
                            self.trend_max_items,
                            COOCCURRENCE_PREFIX,
                            e.ts,
                            flush_id,
                        ],
                        pipe,
                    )
                for key in stale_plans:  # the previous batch's, flushed: see cluster_stats
                    pipe.delete(key)
                return list(await pipe.execute())[: len(events)]

        replies = await self.retrying("apply", run)
        failed = sum(1 for r in replies if r[0] and not r[4])
        if self.cluster:
            # The previous flush's plans are deleted now, so its markers may go next.
            self._stale_plans, settled = [], self._stale_markers
            failed += await self._flush_stats(events, replies, stats_keys, settled)
        if failed:
            log.warning("item statistics were not updated for %d event(s)", failed)
            if self._on_stats_error is not None:
                for _ in range(failed):
                    self._on_stats_error("update")
        return [
            Applied(UserState(e.user_id, ()), applied=False, forgotten=True)
            if r[0] == -1
            else Applied(user_state(e.user_id, r[1], r[2], r[3], r[5]), bool(r[0]))
            for e, r in zip(events, replies, strict=True)
        ]

    async def _flush_stats(
        self,
        events: Sequence[Event],
        replies: Sequence[Any],
        plan_keys: Sequence[str],
        settled: Sequence[str],
    ) -> int:
        """Count the plans the apply script returned (new events, and replayed ones whose
        plan was never flushed) in the item statistics, one call per slot; returns how
        many events' statistics were not updated (a non-connection error, reported).

        ``plan_keys``: where each event's plan is stored. ``settled``: marker sets of the
        previous flush, whose plans are deleted; they are given :data:`MARKER_GRACE_S` to
        live (a worker that read one of those plans just before it went may still be
        flushing it), unless this flush uses them again."""
        plans = []
        for e, reply, plan_key in zip(events, replies, plan_keys, strict=True):
            if len(reply) > 6 and reply[6]:
                member = event_member(self._stored_id(e.user_id), e.event_id)
                plans.append(parse_plan(reply[6], member, plan_key))
        calls = flush_calls(plans, self.keys, self._stats_limits())
        used = set(markers(calls))
        expiring = [key for key in settled if key not in used]

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, spec in calls:
                    await self.run_script("stats", keys, [spec], pipe)
                for key in expiring:
                    pipe.expire(key, MARKER_GRACE_S, lt=True)
                await pipe.execute()

        if not calls and not expiring:
            self._stale_markers = []
            return 0
        try:
            await self.retrying("stats", run)
        except (redis_errors.RedisError, redis_errors.RedisClusterException):
            log.exception("flushing item statistics failed; their plans stay pending")
            self._stale_markers = list(settled)
            return len(plans)
        self._stale_plans = [plan.pending_key for plan in plans]
        self._stale_markers = markers(calls)
        return 0

    def _stats_limits(self) -> StatsLimits:
        return StatsLimits(
            marker_ttl_s=self.dedupe_ttl_s,
            cooccurrence_max_members=self.cooccurrence_max_members,
            cooccurrence_ttl_s=self.cooccurrence_ttl_s,
            trend_max_items=self.trend_max_items,
            cooccurrence_window=self.cooccurrence_window,
        )

    async def get(self, user_id: str) -> UserState:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(self._key(user_id, "h"), 0, -1)
                pipe.smembers(self._key(user_id, "p"))
                pipe.smembers(self._key(user_id, "s"))
                pipe.hgetall(self._key(user_id, "shown"))
                return list(await pipe.execute())

        history, purchased, seen, shown = await self.retrying("get", run)
        return user_state(user_id, history, purchased, seen, shown)

    async def save_results(
        self,
        ranked: Sequence[tuple[Recommendation, np.ndarray, int]],
        encoded: Sequence[bytes] | None = None,
    ) -> None:
        """Store each user's latest list and vector (last one wins within a call), given
        as (list, vector, ts of the event behind it); a user forgotten after that event
        gets nothing stored.

        ``encoded``: each list's JSON as published (one per list), stored as they are, so
        a list is encoded once; under pseudonyms the stored copy is encoded again with the
        pseudonym instead of the user id. Each list's event marker records which event's
        list this call leaves stored for the user (read back by :meth:`replayed`): pass
        one batch's lists in one call.
        """
        if encoded is not None and len(encoded) != len(ranked):
            msg = (
                f"`encoded` has {len(encoded)} lists, expected one per ranked list ({len(ranked)})"
            )
            raise ValueError(msg)
        last = {rec.user_id: rec.trigger_event_id for rec, _, _ in ranked}

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for n, (rec, vector, event_ts) in enumerate(ranked):
                    if self._pseudonym is not None:
                        value = encode_recommendation(
                            dataclasses.replace(rec, user_id=self._stored_id(rec.user_id))
                        )
                    elif encoded is not None:
                        value = encoded[n]
                    else:
                        value = encode_recommendation(rec)
                    await self.run_script(
                        "save",
                        [
                            self._key(rec.user_id, "recs"),
                            self._key(rec.user_id, "emb"),
                            self._key(rec.user_id, "shown"),
                            self._forgotten_key(rec.user_id),
                            self._key(rec.user_id, f"ev:{rec.trigger_event_id}"),
                        ],
                        [
                            value,
                            vector.astype(np.float32).tobytes(),
                            self.recommendation_ttl_s,
                            event_ts,
                            self.impressions_window_s,
                            "s:" + last[rec.user_id],
                            *(item.item_id for item in rec.items),
                        ],
                        pipe,
                    )
                await pipe.execute()

        if ranked:
            await self.retrying("save", run)

    async def replayed(self, events: Sequence[Event]) -> list[Replayed]:
        """For events that :meth:`apply` found already applied: whether their list was
        stored and published (one pipelined round-trip; see :data:`ReplayAction`)."""
        if not events:
            return []

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in events:
                    await self.run_script(  # rare: after a replay
                        "replayed",
                        [self._key(e.user_id, f"ev:{e.event_id}"), self._key(e.user_id, "recs")],
                        [e.event_id],
                        pipe,
                    )
                return list(await pipe.execute())

        out = []
        for e, reply in zip(events, await self.retrying("replayed", run), strict=True):
            action = cast(ReplayAction, member(reply[0]))
            if action != "republish":
                out.append(Replayed(action))
            else:
                out.append(Replayed(action, self._with_user_id(bytes(reply[1]), e.user_id)))
        return out

    async def latest_recommendation(self, user_id: str) -> bytes | None:
        """The user's latest stored list (JSON), with their user id.

        Raises:
            ValueError: under pseudonyms, the stored value is not a JSON object.
        """

        async def run() -> Any:
            return await self.client.get(self._key(user_id, "recs"))

        value = await self.retrying("latest", run)
        return None if value is None else self._with_user_id(bytes(value), user_id)

    async def upgrade_stored_reasons(
        self, user_id: str, trigger_event_id: str, reasons: Mapping[str, str]
    ) -> bool:
        """Put new reason sentences (item id -> sentence) into the user's stored list, if
        that list is still the one of ``trigger_event_id`` (a newer list is left alone);
        returns whether it was changed. Its TTL is kept."""
        key = self._key(user_id, "recs")

        async def run() -> bool:
            for _ in range(3):  # a list saved meanwhile: read it again
                stored = await self.client.get(key)
                if stored is None:
                    return False
                rec = recommendation_from_json(bytes(stored))
                if rec.trigger_event_id != trigger_event_id:
                    return False
                items = tuple(
                    dataclasses.replace(i, reason=reasons.get(i.item_id, i.reason))
                    for i in rec.items
                )
                value = encode_recommendation(dataclasses.replace(rec, items=items))
                if await self.run_script("cas", [key], [bytes(stored), value]):
                    return True
            return False

        return await self.retrying("upgrade", run)

    def _with_user_id(self, stored: bytes, user_id: str) -> bytes:
        """A stored list as it was published: under pseudonyms, with the user's own id put
        back (and so the list's own ``recommendation_id``, which derives from it).

        Raises:
            ValueError: under pseudonyms, the stored value is not a recommendation message.
        """
        if self._pseudonym is None:
            return stored
        rec = recommendation_from_json(stored)  # msgspec.DecodeError is a ValueError
        return encode_recommendation(dataclasses.replace(rec, user_id=user_id))

    async def user_vector(self, user_id: str) -> np.ndarray | None:
        value = await self.retrying("vector", lambda: self.client.get(self._key(user_id, "emb")))
        return None if value is None else np.frombuffer(value, dtype=np.float32)

    async def forget(self, user_id: str, until_ms: int | None = None) -> int:
        """Delete every key of this user (history, purchases, seen items, dedupe markers,
        stored list and vector, impressions); returns how many keys went.

        With ``until_ms``, also keep a marker (for the dedupe window) so that events of
        the user stamped at or before ``until_ms`` that are still on their way are
        ignored instead of bringing the state back.
        """
        pattern = user_prefix(glob_escape(key_part(self._stored_id(user_id)))) + "*"

        async def run() -> int:
            # The marker first: if Redis refuses it (out of memory), nothing is deleted
            # yet and the whole request is retried; once it is set, a late event cannot
            # bring back what the deletes below remove.
            if until_ms is not None:
                await self.client.set(self._forgotten_key(user_id), until_ms, ex=self.dedupe_ttl_s)
            keys = [k async for k in self.client.scan_iter(match=pattern, count=1000)]
            if keys:
                await self.client.delete(*keys)
            async for key in self.client.scan_iter(match="sr:exp:*", count=1000):
                if member(key).rsplit(":", 1)[-1] in EXPERIMENT_PER_USER:
                    await self.client.hdel(key, self._stored_id(user_id))
            return len(keys)

        return await self.retrying("forget", run)
