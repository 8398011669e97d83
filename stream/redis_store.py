"""Redis adapter: user state, latest recommendations and the shared catalog.

Keys (``{u:USER}`` is a Redis Cluster hash tag, so one user's keys share a slot):

====================================  =============================================
``sr:{u:USER}:h``                     list of recent interactions, JSON [item, type, ts]
``sr:{u:USER}:p``                     set of purchased item ids
``sr:{u:USER}:s``                     set of every item id the user interacted with
``sr:{u:USER}:ev:EVENT_ID``           dedupe marker with TTL (idempotent replays)
``sr:{u:USER}:emb``                   float32 bytes of the latest user vector
``sr:{u:USER}:recs``                  latest recommendation message (JSON)
``sr:{u:USER}:shown``                 hash item_id -> times recommended in the current
                                      impressions window (only with max_impressions > 0)
``sr:forgotten:DIGEST``               after a forget request: its time (epoch ms); events of
                                      the user stamped at or before it are ignored (TTL:
                                      the dedupe window). DIGEST is SHA-256 of ``USER``, so
                                      no key or value holds the forgotten user's id
``sr:catalog``                        hash item_id -> item JSON
``sr:catalog:log``                    stream of item ids in change order
``sr:items:trend``                    sorted set item_id -> log-space decayed event count
``sr:co:v:ITEM``                      sorted set other item -> times viewed together
``sr:co:b:ITEM``                      sorted set other item -> times bought together
``sr:exp:EXP:VARIANT:WHAT``           hash user -> lists served / clicks / add-to-carts /
                                      purchases on lists, under experiment EXP
``sr:exp:EXP:VARIANT:series``         hash MINUTE:WHAT -> the arm's counts per minute of
                                      event time (lists, actions, items, fallbacks, latency)
``sr:exp:EXP:VARIANT:items``          HyperLogLog of the items the arm recommended
``sr:{u:USER}:rec_at``                hash item_id -> "TS|EXP": when it was last recommended
                                      to the user (expires after the attribution window)
====================================  =============================================

Every user-state update is one Lua script (dedupe + append + trim + purchase + item
statistics) so a replayed event has exactly-once effect: the trend score and the
co-occurrence counts (:mod:`engine.item_stats`) change only when the event's dedupe marker
was newly set. The item statistics hold no user ids. Each co-occurrence set grows to twice
``cooccurrence_max_members`` and is then cut back to its top members, and expires
``cooccurrence_ttl_s`` after its last update; the trend set is cut back the same way to
``trend_max_items``.

Single Redis node (or a primary with replicas / Sentinel), not Redis Cluster: the item
keys and the forget markers live in other hash slots than the user's ``{u:USER}`` keys,
and the co-occurrence keys of the user's previous items are found inside the script, from
the user's history.
Keeping the increments in the dedupe script is what makes them exactly-once; on a
cluster they would have to move to a second script with its own dedupe marker.

``USER`` is the user id, or its keyed pseudonym when ``STREAMREC_USER_ID_HMAC_KEY`` is set
(:mod:`stream.pseudonyms`); stored lists then carry the pseudonym too, and
:meth:`RedisStore.latest_recommendation` puts the caller's user id back.

Connection failures are retried with capped exponential backoff and counted; nothing is
dropped. A failure of the item-statistics part of the script (it runs under ``pcall``)
never fails the event: the event is applied, the statistics update is skipped and
reported through ``on_stats_error``; reading the statistics degrades to none the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import numpy as np
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from engine.item_stats import ItemStats, TrendParams, log_weight, trending
from engine.state import Applied
from engine.types import Event, Interaction, Item, Recommendation, UserState
from stream.contracts import decode_item, encode_item, encode_recommendation
from stream.pseudonyms import pseudonymiser
from stream.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors that pass: the connection, and a server that cannot take writes for now (out of
#: memory, a replica after a failover, loading, a cluster resharding). The worker retries
#: these with backoff and holds its batch, so no event is lost meanwhile.
RETRYABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    OSError,
)

_APPLY = """
local function item_stats(previous)
  local item, weight = ARGV[5], tonumber(ARGV[7])
  local old = redis.call('ZSCORE', KEYS[5], item)
  local score = weight
  if old then  -- log(exp(old) + exp(weight)), as engine.item_stats.add_log
    old = tonumber(old)
    local high, low = old, weight
    if weight > old then high, low = weight, old end
    score = high + math.log(1 + math.exp(low - high))
  end
  redis.call('ZADD', KEYS[5], score, item)
  local trend_cap = tonumber(ARGV[11])
  if redis.call('ZCARD', KEYS[5]) > 2 * trend_cap then
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -trend_cap - 1)
  end
  local cap, ttl, prefix = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[12]
  local function bump(kind, a, b)
    local key = prefix .. kind .. ':' .. a
    redis.call('ZINCRBY', key, 1, b)
    if redis.call('ZCARD', key) > 2 * cap then redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1) end
    redis.call('EXPIRE', key, ttl)
  end
  -- as engine.item_stats.cooccurrence_pairs: distinct others, most recent first
  local buying = ARGV[6] == 'purchase' or ARGV[6] == 'add_to_cart'
  local viewed, bought = {}, {}
  for i = #previous, 1, -1 do
    local entry = cjson.decode(previous[i])
    local other = entry[1]
    if other ~= item then
      if not viewed[other] then
        viewed[other] = true
        bump('v', item, other)
        bump('v', other, item)
      end
      if buying and not bought[other] and (entry[2] == 'purchase' or entry[2] == 'add_to_cart') then
        bought[other] = true
        bump('b', item, other)
        bump('b', other, item)
      end
    end
  end
end

local gone = redis.call('GET', KEYS[7])
if gone and tonumber(ARGV[13]) <= tonumber(gone) then
  return {-1, {}, {}, {}, 1, {}}  -- the user asked to be forgotten after this event
end
local applied, stats = 0, 1
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  local window = tonumber(ARGV[8])
  local previous = {}
  if window > 0 then previous = redis.call('LRANGE', KEYS[1], -window, -1) end
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
  if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end
  redis.call('SADD', KEYS[4], ARGV[5])
  applied = 1
  if not pcall(item_stats, previous) then stats = 0 end
end
return {applied, redis.call('LRANGE', KEYS[1], 0, -1), redis.call('SMEMBERS', KEYS[2]),
        redis.call('SMEMBERS', KEYS[4]), stats, redis.call('HGETALL', KEYS[6])}
"""

# Store one list and vector unless the user was forgotten after the event behind them.
_SAVE = """
local gone = redis.call('GET', KEYS[4])
if gone and tonumber(ARGV[4]) <= tonumber(gone) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
local window = tonumber(ARGV[5])
if window > 0 and #ARGV > 5 then
  for i = 6, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
  redis.call('EXPIRE', KEYS[3], window, 'NX')
end
return 1
"""

# The highest members of many sorted sets, with scores, in one call (the item statistics
# of a batch: hundreds of keys; one reply for hiredis to parse instead of one per key).
# KEYS[1] gets ARGV[1] members, the other keys ARGV[2] each; flat [m, s, m, s, ...] replies.
# Raw replies: redis-py's callback for ``withscores=True`` re-encodes every RESP3 score to
# bytes and back, which cost more than the whole state update per event.
_TOPS = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(i == 1 and ARGV[1] or ARGV[2])
  out[i] = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
end
return out
"""

_decode_entry = msgspec.json.Decoder(tuple[str, str, int]).decode
_encode = msgspec.json.Encoder().encode


def user_key(user_id: str, suffix: str) -> str:
    return _user_prefix(key_part(user_id)) + suffix


def _user_prefix(part: str) -> str:
    """``sr:{u:PART}:``, the start of every key of the user whose :func:`key_part` (or a
    glob pattern of it) is ``part``."""
    return f"sr:{{u:{part}}}:"


#: Marks a user id that :func:`key_part` replaced by its digest.
DIGEST_MARK = "~sha256:"


def key_part(user_id: str) -> str:
    """The user's part of their keys: the id itself, unless it holds a ``}`` (which would
    end the hash tag early, so that ``A}:ev:Z``'s keys could be ``A``'s) or starts with
    :data:`DIGEST_MARK`; those become the mark and the id's SHA-256. So no two ids share
    a key, and every key of a user sits in one Redis Cluster slot."""
    if "}" in user_id or user_id.startswith(DIGEST_MARK):
        return DIGEST_MARK + hashlib.sha256(user_id.encode("utf-8")).hexdigest()
    return user_id


CATALOG = "sr:catalog"
CATALOG_LOG = "sr:catalog:log"
TREND = "sr:items:trend"
COOCCURRENCE_PREFIX = "sr:co:"
FORGOTTEN_PREFIX = "sr:forgotten:"
#: How the workers key users (``off``, or a fingerprint of their HMAC key), so that a
#: command with another key refuses instead of missing every user.
PSEUDONYMS_KEY = "sr:pseudonyms"


#: The per-user experiment counters: lists served and the actions attributed to them.
EXPERIMENT_PER_USER = ("lists", "click", "add_to_cart", "purchase")


def experiment_key(experiment: str, variant: str, what: str) -> str:
    """``sr:exp:EXPERIMENT:VARIANT:WHAT``: a per-user hash (:data:`EXPERIMENT_PER_USER`),
    the arm's ``series`` hash or its ``items`` HyperLogLog."""
    return f"sr:exp:{experiment}:{variant}:{what}"


@dataclass
class ExperimentRecord:
    """One batch's experiment counts.

    Attributes:
        per_user: (variant, user id, what) to count one for; what in EXPERIMENT_PER_USER.
        series: (variant, "MINUTE:what", amount) to add to the arm's time series.
        shown: (variant, user id, item ids, event ts) of each list served: its items count
            toward the arm's coverage and, with ``window_s``, are remembered per user
            for attribution without a recommendation id.
        window_s: The attribution window (0: nothing remembered).
    """

    per_user: list[tuple[str, str, str]] = field(default_factory=list)
    series: list[tuple[str, str, int]] = field(default_factory=list)
    shown: list[tuple[str, str, list[str], int]] = field(default_factory=list)
    window_s: int = 0

    @property
    def empty(self) -> bool:
        return not (self.per_user or self.series or self.shown)


def cooccurrence_key(kind: str, item_id: str) -> str:
    """``sr:co:v:ITEM`` (viewed together) or ``sr:co:b:ITEM`` (bought together)."""
    return f"{COOCCURRENCE_PREFIX}{kind}:{item_id}"


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
        trend_half_life_s: float = 3600.0,
        trend_max_items: int = 10_000,
        cooccurrence_window: int = 5,
        cooccurrence_max_members: int = 100,
        cooccurrence_ttl_s: int = 30 * 24 * 3600,
        on_stats_error: Callable[[str], None] | None = None,
        impressions_window_s: int = 0,
        pseudonym: Callable[[str], str] | None = None,
    ) -> None:
        # redis-py's stubs type every reply as bytes | str | None; replies here are bytes
        # (decode_responses is off), so the client is used untyped.
        self.client: Any = client
        self.history_length = history_length
        self.dedupe_ttl_s = dedupe_ttl_s
        self.recommendation_ttl_s = recommendation_ttl_s
        self.retry_max_s = retry_max_s
        self._on_error = on_error
        self.trend_half_life_s = trend_half_life_s
        self.trend_max_items = trend_max_items
        self.cooccurrence_window = cooccurrence_window
        self.cooccurrence_max_members = cooccurrence_max_members
        self.cooccurrence_ttl_s = cooccurrence_ttl_s
        self._on_stats_error = on_stats_error
        self.impressions_window_s = impressions_window_s
        self._apply_script = client.register_script(_APPLY)
        self._save_script = client.register_script(_SAVE)
        self._tops_script = client.register_script(_TOPS)
        self._pseudonym = pseudonym

    def _key(self, user_id: str, suffix: str) -> str:
        """The Redis key of one user's ``suffix`` (under their pseudonym, if any)."""
        return user_key(self._stored_id(user_id), suffix)

    def _forgotten_key(self, user_id: str) -> str:
        digest = hashlib.sha256(self._stored_id(user_id).encode("utf-8")).hexdigest()
        return f"{FORGOTTEN_PREFIX}{digest}"

    def _stored_id(self, user_id: str) -> str:
        return user_id if self._pseudonym is None else self._pseudonym(user_id)

    def _pseudonym_fingerprint(self) -> str:
        """``off``, or the pseudonym of a fixed id: equal for equal keys, and it says
        nothing of the key."""
        probe = "\x00streamrec-keycheck"
        stored = self._stored_id(probe)
        return "off" if stored == probe else stored

    async def mark_pseudonyms(self) -> None:
        """Record how this worker keys users (:data:`PSEUDONYMS_KEY`)."""
        fingerprint = self._pseudonym_fingerprint()
        await self.retrying("mark", lambda: self.client.set(PSEUDONYMS_KEY, fingerprint))

    async def pseudonym_mismatch(self) -> str | None:
        """Why this store cannot find the workers' users (its HMAC key differs from the
        one the workers recorded), or None (the same, or nothing recorded yet)."""
        stored = await self.client.get(PSEUDONYMS_KEY)
        mine = self._pseudonym_fingerprint()
        if stored is None or stored.decode() == mine:
            return None
        if stored == b"off":
            return (
                "the workers store plain user ids, but STREAMREC_USER_ID_HMAC_KEY is set "
                "here: unset it"
            )
        if mine == "off":
            return (
                "the workers pseudonymise user ids (STREAMREC_USER_ID_HMAC_KEY), but no "
                "key is set here: set the workers' key"
            )
        return (
            "the workers pseudonymise user ids under another STREAMREC_USER_ID_HMAC_KEY "
            "than the one set here: set the workers' key"
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RedisStore:
        """A store configured from the settings (``kwargs``: callbacks and overrides)."""
        options: dict[str, Any] = {
            "history_length": settings.history_length,
            "dedupe_ttl_s": settings.dedupe_ttl_s,
            "recommendation_ttl_s": settings.recommendation_ttl_s,
            "retry_max_s": settings.redis_retry_max_s,
            "trend_half_life_s": settings.trend_half_life_s,
            "trend_max_items": settings.trend_max_items,
            "cooccurrence_window": settings.cooccurrence_window,
            "cooccurrence_max_members": settings.cooccurrence_max_members,
            "cooccurrence_ttl_s": settings.cooccurrence_ttl_s,
            # A variant may turn impressions on (max_impressions) for its users.
            "impressions_window_s": settings.impressions_window_s
            if settings.max_impressions or settings.experiments_file is not None
            else 0,
            "pseudonym": pseudonymiser(settings.user_id_hmac_key),
        }
        return cls.from_url(settings.redis_url.get_secret_value(), **(options | kwargs))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        # RESP2 unless the URL asks for another protocol: hiredis parses the score-heavy
        # replies of the item statistics almost twice as fast in RESP2 as in RESP3
        # (redis-py 8's default), and every reply here reads the same in both.
        client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, protocol=2
        )
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

    async def apply(self, events: Sequence[Event], now_ms: int | None = None) -> list[Applied]:
        """Apply events in order in one pipelined round-trip; see ``engine.state``.

        New events also count in the item statistics, at their ``ts`` but never later
        than ``now_ms`` (an event stamped in the future must not outweigh the present).
        """

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in events:
                    entry = _encode([e.item_id, e.type, e.ts])
                    await self._apply_script(
                        keys=[
                            self._key(e.user_id, "h"),
                            self._key(e.user_id, "p"),
                            self._key(e.user_id, f"ev:{e.event_id}"),
                            self._key(e.user_id, "s"),
                            TREND,
                            self._key(e.user_id, "shown"),
                            self._forgotten_key(e.user_id),
                        ],
                        args=[
                            entry,
                            e.item_id if e.type == "purchase" else "",
                            self.history_length,
                            self.dedupe_ttl_s,
                            e.item_id,
                            e.type,
                            repr(log_weight(_at_most(e.ts, now_ms), self.trend_half_life_s)),
                            self.cooccurrence_window,
                            self.cooccurrence_max_members,
                            self.cooccurrence_ttl_s,
                            self.trend_max_items,
                            COOCCURRENCE_PREFIX,
                            e.ts,
                        ],
                        client=pipe,
                    )
                return list(await pipe.execute())

        if not events:
            return []
        replies = await self.retrying("apply", run)
        failed = sum(1 for r in replies if r[0] and not r[4])
        if failed:
            log.warning("item statistics were not updated for %d event(s)", failed)
            if self._on_stats_error is not None:
                for _ in range(failed):
                    self._on_stats_error("update")
        return [
            Applied(UserState(e.user_id, ()), applied=False, forgotten=True)
            if r[0] == -1
            else Applied(_state(e.user_id, r[1], r[2], r[3], r[5]), bool(r[0]))
            for e, r in zip(events, replies, strict=True)
        ]

    async def get(self, user_id: str) -> UserState:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(self._key(user_id, "h"), 0, -1)
                pipe.smembers(self._key(user_id, "p"))
                pipe.smembers(self._key(user_id, "s"))
                pipe.hgetall(self._key(user_id, "shown"))
                return list(await pipe.execute())

        history, purchased, seen, shown = await self.retrying("get", run)
        return _state(user_id, history, purchased, seen, shown)

    async def save_results(self, ranked: Sequence[tuple[Recommendation, np.ndarray, int]]) -> None:
        """Store each user's latest list and vector (last one wins within a batch), given
        as (list, vector, ts of the event behind it); a user forgotten after that event
        gets nothing stored."""

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for rec, vector, event_ts in ranked:
                    stored = rec
                    if self._pseudonym is not None:
                        stored = dataclasses.replace(rec, user_id=self._stored_id(rec.user_id))
                    await self._save_script(
                        keys=[
                            self._key(rec.user_id, "recs"),
                            self._key(rec.user_id, "emb"),
                            self._key(rec.user_id, "shown"),
                            self._forgotten_key(rec.user_id),
                        ],
                        args=[
                            encode_recommendation(stored),
                            vector.astype(np.float32).tobytes(),
                            self.recommendation_ttl_s,
                            event_ts,
                            self.impressions_window_s,
                            *(item.item_id for item in rec.items),
                        ],
                        client=pipe,
                    )
                await pipe.execute()

        if ranked:
            await self.retrying("save", run)

    async def latest_recommendation(self, user_id: str) -> bytes | None:
        """The user's latest stored list (JSON), with their user id.

        Raises:
            ValueError: under pseudonyms, the stored value is not a JSON object.
        """

        async def run() -> Any:
            return await self.client.get(self._key(user_id, "recs"))

        value = await self.retrying("latest", run)
        if value is None:
            return None
        if self._pseudonym is None:
            return bytes(value)
        stored = msgspec.json.decode(value)  # msgspec.DecodeError is a ValueError
        if not isinstance(stored, dict):
            msg = f"the stored list is a JSON {type(stored).__name__}, not an object"
            raise ValueError(msg)  # noqa: TRY004 - bad data, like a decode error
        return msgspec.json.encode(stored | {"user_id": user_id})

    async def user_vector(self, user_id: str) -> np.ndarray | None:
        value = await self.retrying("vector", lambda: self.client.get(self._key(user_id, "emb")))
        return None if value is None else np.frombuffer(value, dtype=np.float32)

    # -- experiments -------------------------------------------------------------

    async def record_experiment(self, experiment: str, record: ExperimentRecord) -> None:
        """Store one batch's experiment counts in one pipelined round-trip."""
        if record.empty:
            return

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for variant, user_id, what in record.per_user:
                    pipe.hincrby(
                        experiment_key(experiment, variant, what), self._stored_id(user_id), 1
                    )
                for variant, name, amount in record.series:
                    pipe.hincrby(experiment_key(experiment, variant, "series"), name, amount)
                for variant, user_id, items, ts in record.shown:
                    pipe.pfadd(experiment_key(experiment, variant, "items"), *items)
                    if record.window_s > 0 and items:
                        key = self._key(user_id, "rec_at")
                        pipe.hset(key, mapping=dict.fromkeys(items, f"{ts}|{experiment}"))
                        pipe.expire(key, record.window_s)
                await pipe.execute()

        await self.retrying("experiment", run)

    async def recommended_at(
        self, experiment: str, pairs: Sequence[tuple[str, str]]
    ) -> list[int | None]:
        """For each (user, item): the event time of the latest list of ``experiment`` that
        recommended the item to the user (within the attribution window), or None."""
        if not pairs:
            return []

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id, item_id in pairs:
                    pipe.hget(self._key(user_id, "rec_at"), item_id)
                return list(await pipe.execute())

        out: list[int | None] = []
        for raw in await self.retrying("experiment", run):
            ts, _, name = (raw or b"").decode().partition("|")
            out.append(int(ts) if ts and name == experiment else None)
        return out

    async def experiment_counts(self, experiment: str, variant: str, what: str) -> dict[str, int]:
        """Per stored user id, the ``what`` counter of one arm (``"series"``: per
        ``MINUTE:what`` field, the arm's counts by minute of event time)."""
        raw = await self.retrying(
            "experiment", lambda: self.client.hgetall(experiment_key(experiment, variant, what))
        )
        return {_member(k): int(v) for k, v in raw.items()}

    async def experiment_coverage(self, experiment: str, variant: str) -> int:
        """About how many distinct items the arm has recommended (HyperLogLog, ~1% error)."""
        key = experiment_key(experiment, variant, "items")
        return int(await self.retrying("experiment", lambda: self.client.pfcount(key)))

    async def forget(self, user_id: str, until_ms: int | None = None) -> int:
        """Delete every key of this user (history, purchases, seen items, dedupe markers,
        stored list and vector, impressions); returns how many keys went.

        With ``until_ms``, also keep a marker (for the dedupe window) so that events of
        the user stamped at or before ``until_ms`` that are still on their way are
        ignored instead of bringing the state back.
        """
        pattern = _user_prefix(_glob_escape(key_part(self._stored_id(user_id)))) + "*"

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
                if _member(key).rsplit(":", 1)[-1] in EXPERIMENT_PER_USER:
                    await self.client.hdel(key, self._stored_id(user_id))
            return len(keys)

        return await self.retrying("forget", run)

    # -- item statistics ------------------------------------------------------------

    async def trending_items(self, now_ms: int, limit: int) -> list[tuple[str, float]]:
        """The ``limit`` items with the highest decayed event counts at ``now_ms``, with
        those counts, highest first."""

        [rows] = await self.retrying("item_stats", lambda: self._highest([TREND], limit, limit))
        params = TrendParams(half_life_s=self.trend_half_life_s, top_n=max(limit, 1))
        ranked = trending(_scored(rows), now_ms, dataclasses.replace(params, min_count=0.0))
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
        keys = [cooccurrence_key(kind[0], item_id) for item_id in ids]
        replies = await self.retrying("item_stats", lambda: self._highest(keys, limit, limit))
        return {i: _counts(r) for i, r in zip(ids, replies, strict=True) if r}

    async def _highest(self, keys: Sequence[str], first: int, rest: int) -> list[Any]:
        """The ``first`` highest members of ``keys[0]`` and the ``rest`` highest of each
        other key, with scores, as raw replies (:data:`_TOPS`), in one round-trip."""
        return list(await self._tops_script(keys=list(keys), args=[first, rest]))

    async def item_stats(
        self, session_items: Iterable[str], now_ms: int, params: TrendParams, co_limit: int
    ) -> ItemStats:
        """Trending items and both co-occurrence tables of ``session_items``, in one
        round-trip, as plain data for the recommender.

        A Redis error other than a lost connection (retried) gives empty statistics and
        is reported through ``on_stats_error("read")``; the batch is still ranked.
        """
        ids = list(dict.fromkeys(session_items))

        keys = [TREND]
        for item_id in ids:
            keys += [cooccurrence_key("b", item_id), cooccurrence_key("v", item_id)]

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
        bought = {i: _counts(r) for i, r in zip(ids, rest[0::2], strict=True) if r}
        viewed = {i: _counts(r) for i, r in zip(ids, rest[1::2], strict=True) if r}
        return ItemStats(
            trending=trending(_scored(trend), now_ms, params),
            half_life_s=params.half_life_s,
            bought_together=bought,
            viewed_together=viewed,
        )

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


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (a user id "*" must not match
    everyone's keys)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _state(
    user_id: str, history: Sequence[bytes], purchased: Any, seen: Any, shown: Any
) -> UserState:
    interactions = []
    for raw in history:
        item_id, type_, ts = _decode_entry(raw)
        interactions.append(Interaction(item_id, type_, ts))  # type: ignore[arg-type]
    return UserState(
        user_id, tuple(interactions), _strings(purchased), _strings(seen), _shown(shown)
    )


def _shown(raw: Any) -> dict[str, int]:
    """HGETALL as a dict (redis-py) or as a flat [field, value, ...] list (from Lua)."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {_member(k): int(v) for k, v in pairs}


def _at_most(ts: int, now_ms: int | None) -> int:
    return ts if now_ms is None else min(ts, now_ms)


def _member(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _pairs(rows: Any) -> Iterable[tuple[Any, Any]]:
    """(member, score) pairs of a raw WITHSCORES reply: nested ``[[m, s], ...]`` (RESP3)
    or flat ``[m, s, m, s, ...]`` (RESP2)."""
    if rows and isinstance(rows[0], list | tuple):
        return rows  # type: ignore[no-any-return]
    return zip(rows[::2], rows[1::2], strict=True)


def _scored(rows: Any) -> list[tuple[str, float]]:
    return [(_member(m), float(score)) for m, score in _pairs(rows)]


def _counts(rows: Any) -> dict[str, int]:
    return {_member(m): round(float(score)) for m, score in _pairs(rows)}


def _strings(members: Any) -> frozenset[str]:
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
