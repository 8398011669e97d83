"""The Redis key table: every key streamrec writes, and how user keys are built.

Keys (``{u:USER}`` is a Redis Cluster hash tag, so one user's keys share a slot):

====================================  =============================================
``sr:{u:USER}:h``                     list of recent interactions, JSON [item, type, ts]
``sr:{u:USER}:p``                     set of purchased item ids
``sr:{u:USER}:s``                     set of every item id the user interacted with
``sr:{u:USER}:ev:EVENT_ID``           dedupe marker with TTL (idempotent replays): ``1``
                                      once applied, ``s:STORED_EVENT_ID`` once a list was
                                      saved in its batch (whose list that save left
                                      stored), which tells a replay what to publish
``sr:{u:USER}:emb``                   float32 bytes of the latest user vector
``sr:{u:USER}:recs``                  latest recommendation message (JSON)
``sr:{u:USER}:shown``                 hash item_id -> times recommended in the current
                                      impressions window (only with max_impressions > 0)
``sr:forgotten:{TAG}:DIGEST``          after a forget request: its time (epoch ms); events of
                                      the user stamped at or before it are ignored (TTL:
                                      the dedupe window). DIGEST is SHA-256 of ``USER``, so
                                      no key or value holds the forgotten user's id; TAG
                                      (:func:`slot_tag`) puts it in the user's hash slot
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
``sr:reason-frames:MODEL:LANG``       hash prompt key -> the reason writer's answer for a
                                      sentence frame ("" when the guard rejected it), per
                                      model and language; no user data (frames hold none)
====================================  =============================================

Every user-state update is one Lua script (dedupe + append + trim + purchase + item
statistics) so a replayed event has exactly-once effect: the trend score and the
co-occurrence counts (:mod:`streamrec.engine.serving.item_stats`) change only when the
event's dedupe marker was newly set. The item statistics hold no user ids. Each
co-occurrence set grows to twice ``cooccurrence_max_members`` and is then cut back to its top
members, and expires
``cooccurrence_ttl_s`` after its last update; the trend set is cut back the same way to
``trend_max_items``.

Redis Cluster (a ``redis+cluster://`` URL, :func:`is_cluster_url`): every script and
transaction touches one hash slot. The user's keys and forget marker share the user's
slot; the catalog keys are ``sr:{catalog}`` and ``sr:{catalog}:log``; the item statistics
move to ``sr:{items}:trend`` and ``sr:co:{cB}:KIND:ITEM`` (B: one of
:data:`COOCCURRENCE_BUCKETS` buckets of the item), which the apply script cannot reach
from the user's slot. There the apply script leaves the event's statistics as a pending
plan in the user's slot (``sr:{u:USER}:st:EVENT_ID``, which a replay of the event reads
back) and the worker flushes each batch's plans with one script call per slot, whose
marker set (``sr:{items}:sd:FLUSH`` / ``sr:co:{cB}:sd:FLUSH``, members: a digest of user
and event) makes each event count once in each slot, however often it is flushed again
(:mod:`streamrec.stream.redis_store.cluster_stats`). Plans and markers of a flushed batch
are cleared by the next batch: the plans deleted, then the markers left 15 minutes to
live; both expire after the dedupe window otherwise.

``USER`` is the user id, or its keyed pseudonym when ``STREAMREC_USER_ID_HMAC_KEY`` is set
(:mod:`streamrec.stream.pseudonyms`); stored lists then carry the pseudonym too, and
:meth:`RedisStore.latest_recommendation` puts the caller's user id back.

Connection failures are retried with capped exponential backoff and counted; nothing is
dropped. A failure of the item-statistics part of the script (it runs under ``pcall``)
never fails the event: the event is applied, the statistics update is skipped and
reported through ``on_stats_error``; reading the statistics degrades to none the same way.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass


def user_key(user_id: str, suffix: str) -> str:
    return user_prefix(key_part(user_id)) + suffix


def user_prefix(part: str) -> str:
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


def reason_frames_key(model: str, language: str) -> str:
    """``sr:reason-frames:MODEL:LANG``: the reason writer's frame sentences (one key: one
    hash slot on a cluster too)."""
    return f"sr:reason-frames:{model}:{language}"


def cooccurrence_key(kind: str, item_id: str) -> str:
    """``sr:co:v:ITEM`` (viewed together) or ``sr:co:b:ITEM`` (bought together)."""
    return f"{COOCCURRENCE_PREFIX}{kind}:{item_id}"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (a user id "*" must not match
    everyone's keys)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


#: ``redis+cluster://`` (and ``rediss+cluster://`` for TLS): the URL schemes that select
#: Redis Cluster; the hosts after the scheme are the cluster's startup nodes.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

#: How many hash-tag buckets the co-occurrence keys of a cluster spread over (and so the
#: most script calls a batch's statistics flush makes for them).
COOCCURRENCE_BUCKETS = 64

SLOTS = 16384


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (:data:`CLUSTER_SCHEMES`)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def key_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of its hash tag, if it has one)."""
    data = key.encode("utf-8")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def _tag_solver() -> tuple[int, dict[int, tuple[int, int]]]:
    """CRC16 is affine over GF(2) for messages of one length: the CRC of ``@@@@`` with
    low nibbles flipped by the 16 bits of x is ``c0 ^ sum(x_i * d_i)``. Returns ``c0`` and
    a reduced basis (pivot bit -> (slot bits, x bits)) of the d_i's 14 slot bits."""
    base = b"@@@@"
    c0 = binascii.crc_hqx(base, 0)
    pivots: dict[int, tuple[int, int]] = {}
    for i in range(16):
        flipped = bytearray(base)
        flipped[i // 4] ^= 1 << (i % 4)
        value, combo = (binascii.crc_hqx(bytes(flipped), 0) ^ c0) % SLOTS, 1 << i
        while value:
            top = value.bit_length() - 1
            if top not in pivots:
                pivots[top] = (value, combo)
                break
            value, combo = value ^ pivots[top][0], combo ^ pivots[top][1]
    return c0, pivots


_C0, _PIVOTS = _tag_solver()


def slot_tag(slot: int) -> str:
    """A four-letter hash tag (``@`` to ``O``) whose keys land in ``slot``: so a key can
    join a slot without naming what else is in it (a forget marker next to the user's
    keys, without the user id)."""
    if not 0 <= slot < SLOTS:
        msg = f"slot must be in [0, {SLOTS}), got {slot}"
        raise ValueError(msg)
    rest, x = (slot ^ _C0) % SLOTS, 0
    while rest:
        value, combo = _PIVOTS[rest.bit_length() - 1]
        rest, x = rest ^ value, x ^ combo
    return "".join(chr(0x40 | (x >> (4 * k)) & 15) for k in range(4))


def forgotten_key(stored_id: str) -> str:
    """``sr:forgotten:{TAG}:DIGEST``: the forget marker of the user stored as
    ``stored_id``, in that user's hash slot, holding no id."""
    digest = hashlib.sha256(stored_id.encode("utf-8")).hexdigest()
    tag = slot_tag(key_slot(user_prefix(key_part(stored_id))))
    return f"{FORGOTTEN_PREFIX}{{{tag}}}:{digest}"


@dataclass(frozen=True)
class KeyLayout:
    """The shared keys' names: a single node's, or a cluster's (one slot per script)."""

    cluster: bool = False

    @property
    def catalog(self) -> str:
        return "sr:{catalog}" if self.cluster else CATALOG

    @property
    def catalog_log(self) -> str:
        return "sr:{catalog}:log" if self.cluster else CATALOG_LOG

    @property
    def trend(self) -> str:
        return "sr:{items}:trend" if self.cluster else TREND

    def cooccurrence(self, kind: str, item_id: str) -> str:
        """``sr:co:KIND:ITEM``, or on a cluster ``sr:co:{cB}:KIND:ITEM``."""
        if not self.cluster:
            return cooccurrence_key(kind, item_id)
        return f"{COOCCURRENCE_PREFIX}{{{cooccurrence_bucket(item_id)}}}:{kind}:{item_id}"


def cooccurrence_bucket(item_id: str) -> str:
    """``cB``: the hash tag of ``item_id``'s co-occurrence keys on a cluster."""
    return f"c{binascii.crc_hqx(item_id.encode('utf-8'), 0) % COOCCURRENCE_BUCKETS}"


def stats_marker_key(stats_key: str, flush_id: str) -> str:
    """The marker set of one statistics flush in ``stats_key``'s slot (cluster only)."""
    tag = stats_key[stats_key.index("{") : stats_key.index("}") + 1]
    prefix = "sr:" if tag == "{items}" else COOCCURRENCE_PREFIX
    return f"{prefix}{tag}:sd:{flush_id}"
