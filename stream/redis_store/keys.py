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
co-occurrence counts (:mod:`streamrec.engine.serving.item_stats`) change only when the
event's dedupe marker was newly set. The item statistics hold no user ids. Each
co-occurrence set grows to twice ``cooccurrence_max_members`` and is then cut back to its top
members, and expires
``cooccurrence_ttl_s`` after its last update; the trend set is cut back the same way to
``trend_max_items``.

Single Redis node (or a primary with replicas / Sentinel), not Redis Cluster: the item
keys and the forget markers live in other hash slots than the user's ``{u:USER}`` keys,
and the co-occurrence keys of the user's previous items are found inside the script, from
the user's history.
Keeping the increments in the dedupe script is what makes them exactly-once; on a
cluster they would have to move to a second script with its own dedupe marker.

``USER`` is the user id, or its keyed pseudonym when ``STREAMREC_USER_ID_HMAC_KEY`` is set
(:mod:`streamrec.stream.pseudonyms`); stored lists then carry the pseudonym too, and
:meth:`RedisStore.latest_recommendation` puts the caller's user id back.

Connection failures are retried with capped exponential backoff and counted; nothing is
dropped. A failure of the item-statistics part of the script (it runs under ``pcall``)
never fails the event: the event is applied, the statistics update is skipped and
reported through ``on_stats_error``; reading the statistics degrades to none the same way.
"""

from __future__ import annotations

import hashlib
import re


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


def cooccurrence_key(kind: str, item_id: str) -> str:
    """``sr:co:v:ITEM`` (viewed together) or ``sr:co:b:ITEM`` (bought together)."""
    return f"{COOCCURRENCE_PREFIX}{kind}:{item_id}"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (a user id "*" must not match
    everyone's keys)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)
