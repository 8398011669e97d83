"""Redis adapter: user state, latest recommendations, item statistics, experiments and the
shared catalog.

One store per concern, all on one connection (:class:`RedisConnection`, with retries):

=====================  =========================================================
:mod:`.keys`           the key table (read it first) and how user keys are built
:mod:`.scripts`        the Lua scripts that make an event's effects exactly-once
:mod:`.users`          user state, stored lists and vectors, forgetting a user
:mod:`.item_stats`     trending items and co-occurrence counts
:mod:`.catalog`        the item catalog and its change log
:mod:`.experiments`    experiment counters and attribution marks
:mod:`.reason_frames`  the reason writer's sentence frames
:mod:`.replies`        decoding raw replies into plain values
=====================  =========================================================

:class:`RedisStore` is all of them together, the one object the worker, the API and the
command-line tools use.
"""

from __future__ import annotations

from streamrec.stream.redis_store.catalog import CatalogStore
from streamrec.stream.redis_store.connection import RETRYABLE, RedisConnection
from streamrec.stream.redis_store.experiments import ExperimentRecord, ExperimentStore
from streamrec.stream.redis_store.item_stats import ItemStatsStore
from streamrec.stream.redis_store.keys import (
    CATALOG,
    CATALOG_LOG,
    COOCCURRENCE_PREFIX,
    EXPERIMENT_PER_USER,
    FORGOTTEN_PREFIX,
    PSEUDONYMS_KEY,
    TREND,
    cooccurrence_key,
    experiment_key,
    key_part,
    user_key,
)
from streamrec.stream.redis_store.reason_frames import ReasonFrameStore
from streamrec.stream.redis_store.users import UserStateStore


class RedisStore(UserStateStore, ItemStatsStore, CatalogStore, ExperimentStore, ReasonFrameStore):
    """Async Redis-backed user store (implements
    :class:`streamrec.engine.serving.state.UserStore`), item statistics, catalog,
    experiment counters and the reason writer's frames."""


__all__ = [
    "CATALOG",
    "CATALOG_LOG",
    "COOCCURRENCE_PREFIX",
    "EXPERIMENT_PER_USER",
    "FORGOTTEN_PREFIX",
    "PSEUDONYMS_KEY",
    "RETRYABLE",
    "TREND",
    "CatalogStore",
    "ExperimentRecord",
    "ExperimentStore",
    "ItemStatsStore",
    "ReasonFrameStore",
    "RedisConnection",
    "RedisStore",
    "UserStateStore",
    "cooccurrence_key",
    "experiment_key",
    "key_part",
    "user_key",
]
