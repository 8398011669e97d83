"""The connection every store shares: the client, retries with backoff, user keys
under pseudonyms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster

from streamrec.stream.pseudonyms import pseudonymiser
from streamrec.stream.redis_store import scripts
from streamrec.stream.redis_store.keys import (
    PSEUDONYMS_KEY,
    KeyLayout,
    forgotten_key,
    is_cluster_url,
    user_key,
)
from streamrec.stream.settings import Settings

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
    redis_errors.RedisClusterUnreachableError,
    redis_errors.SlotNotCoveredError,
    OSError,
)


class RedisConnection:
    """The client, its retries and the user-key rules that every store shares."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
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
        #: Redis Cluster: one hash slot per script (:class:`KeyLayout`), scripts sent
        #: whole (a promoted replica has no script cache to run them by digest).
        self.cluster = isinstance(client, RedisCluster)
        self.keys = KeyLayout(cluster=self.cluster)
        # On a cluster: what the last statistics flush left to delete (cluster_stats).
        self._stale_plans: list[str] = []
        self._stale_markers: list[str] = []
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
        self._registered = {
            name: client.register_script(text)
            for name, text in (
                ("apply", scripts.APPLY),
                ("save", scripts.SAVE),
                ("tops", scripts.TOPS),
            )
        }
        self._pseudonym = pseudonym

    async def run_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], pipe: Any = None
    ) -> Any:
        """Run one of :mod:`.scripts` (``name``: ``apply``, ``save``, ``tops``, or any
        upper-case constant there) on the client or queued on ``pipe``. All ``keys`` must
        share a hash slot on a cluster."""
        target = self.client if pipe is None else pipe
        if self.cluster or name not in self._registered:
            text = getattr(scripts, name.upper())
            return await _maybe_await(target.eval(text, len(keys), *keys, *args))
        return await self._registered[name](keys=list(keys), args=list(args), client=target)

    def _key(self, user_id: str, suffix: str) -> str:
        """The Redis key of one user's ``suffix`` (under their pseudonym, if any)."""
        return user_key(self._stored_id(user_id), suffix)

    def _forgotten_key(self, user_id: str) -> str:
        return forgotten_key(self._stored_id(user_id))

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
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Self:
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
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A store on ``url``: ``redis://`` / ``rediss://`` / ``unix://`` for one node,
        ``redis+cluster://`` / ``rediss+cluster://`` for a Redis Cluster."""
        # RESP2 unless the URL asks for another protocol: hiredis parses the score-heavy
        # replies of the item statistics almost twice as fast in RESP2 as in RESP3
        # (redis-py 8's default), and every reply here reads the same in both.
        client: aioredis.Redis | RedisCluster
        if is_cluster_url(url):
            client = cluster_client(url)
        else:
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


async def _maybe_await(value: Any) -> Any:
    """A pipeline's ``eval`` queues and returns the pipeline; a client's is awaitable."""
    return await value if asyncio.iscoroutine(value) else value


def cluster_client(url: str) -> RedisCluster:
    """A cluster client from ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]``
    (``rediss+cluster://`` for TLS): every host is a startup node; the client finds the
    rest of the cluster from them and follows failovers and resharding.

    Raises:
        ValueError: no host, a host without a port, or a database other than 0 (a
            cluster has only database 0).
    """
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    hostpart, _, path = hostpart.partition("/")
    path = path.split("?", 1)[0]
    if path not in ("", "0"):
        msg = "a Redis Cluster has only database 0: drop the /DB part of the URL"
        raise ValueError(msg)
    nodes = []
    for host in filter(None, hostpart.split(",")):
        parsed = urlsplit(f"//{host}")
        if parsed.hostname is None or parsed.port is None:
            msg = f"cluster URL host {host!r} needs HOST:PORT"
            raise ValueError(msg)
        nodes.append(ClusterNode(parsed.hostname, parsed.port))
    if not nodes:
        msg = "a redis+cluster:// URL needs at least one HOST:PORT"
        raise ValueError(msg)
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=scheme.lower().startswith("rediss"),
        socket_timeout=5,
        socket_connect_timeout=5,
        protocol=2,
    )
