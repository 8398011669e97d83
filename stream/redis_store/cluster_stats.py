"""Item statistics on a Redis Cluster: exactly-once per event, one script call per slot.

On one node the apply script updates the trend and co-occurrence sets itself, inside the
event's dedupe check. On a cluster those sets live in other hash slots than the user's,
which a script may not touch, so the apply script stores the event's statistics as a
*plan* in the user's slot and the worker flushes the plans of a batch here:

1. :func:`flush_calls` turns the plans into one :data:`~.scripts.STATS` call per slot:
   the trend set's, and one per co-occurrence bucket (:func:`.keys.cooccurrence_bucket`).
2. Each call adds the event's member (a digest of user and event) to the flush's marker
   set in that slot, and counts the event only if the member was new. A plan flushed
   again, after a crash between the apply and the flush or in the middle of it, so counts
   each event once in each slot, as on one node.
3. The next batch deletes the flushed plans, then (once that succeeded) gives their
   markers 15 minutes to live (``MARKER_GRACE_S``: a worker that read a plan just before
   it went may still be flushing it). A replay of the event finds no plan then, and its
   dedupe marker stops it as before.

The plans of one flush share its id, so the markers of one flush in one slot are one set.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streamrec.engine.serving.item_stats import cooccurrence_pairs
from streamrec.engine.types import Interaction
from streamrec.stream.redis_store.keys import KeyLayout, stats_marker_key

# Lua's cjson writes an empty history as ``{}``.
_decode_plan = msgspec.json.Decoder(tuple[str, str, str, str, list[str] | dict[str, str]]).decode
_decode_entry = msgspec.json.Decoder(tuple[str, str, int]).decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Plan:
    """One applied event's statistics, as the apply script stored them.

    Attributes:
        flush_id: the flush of the batch that applied the event.
        item_id: the event's item.
        event_type: the event's type.
        weight: the trend weight (log space), as the text the worker sent.
        previous: the user's recent interactions before the event, oldest first.
        member: the event's member in the marker sets (no user id in it).
        pending_key: where the plan is stored, in the user's slot.
    """

    flush_id: str
    item_id: str
    event_type: str
    weight: str
    previous: tuple[Interaction, ...]
    member: str
    pending_key: str


def event_member(stored_user_id: str, event_id: str) -> str:
    """The digest that marks an event in the marker sets (event ids are per user)."""
    return hashlib.sha256(f"{stored_user_id}\0{event_id}".encode()).hexdigest()[:24]


def parse_plan(raw: bytes | str, member: str, pending_key: str) -> Plan:
    """A plan from the apply script's JSON reply.

    Raises:
        msgspec.DecodeError: not a plan (a ValueError).
    """
    flush_id, item_id, event_type, weight, previous = _decode_plan(raw)
    interactions = []
    for entry in previous if isinstance(previous, list) else ():
        other, kind, ts = _decode_entry(entry)
        interactions.append(Interaction(other, kind, ts))  # type: ignore[arg-type]
    return Plan(flush_id, item_id, event_type, weight, tuple(interactions), member, pending_key)


@dataclass
class SlotCall:
    """One STATS call: its keys (the marker set first) and its events."""

    keys: list[str]
    events: list[list[Any]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def key_index(self, key: str) -> int:
        """``key``'s 1-based position in :attr:`keys` (Lua's), adding it if new."""
        if key not in self._index:
            self.keys.append(key)
            self._index[key] = len(self.keys)
        return self._index[key]


@dataclass(frozen=True)
class StatsLimits:
    """The caps and lifetimes a flush applies, as the apply script does on one node."""

    marker_ttl_s: int
    cooccurrence_max_members: int
    cooccurrence_ttl_s: int
    trend_max_items: int
    cooccurrence_window: int


def flush_calls(
    plans: Iterable[Plan], layout: KeyLayout, limits: StatsLimits
) -> list[tuple[list[str], str]]:
    """The STATS calls (keys, the JSON argument) that count ``plans``, one per marker set
    (so one per slot and flush).

    Each event adds its trend weight to its item, and for each distinct other item of its
    window (:func:`~streamrec.engine.serving.item_stats.cooccurrence_pairs`) one count in
    both directions of the viewed-together sets, and of the bought-together sets when both
    were bought or carted.
    """
    calls: dict[str, SlotCall] = {}
    for plan in plans:
        ops: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
        trend = layout.trend
        ops[stats_marker_key(trend, plan.flush_id)].append((trend, plan.item_id, plan.weight))
        pairs = cooccurrence_pairs(
            plan.item_id, plan.event_type, plan.previous, limits.cooccurrence_window
        )
        for kind, others in (("v", pairs.viewed), ("b", pairs.bought)):
            for other in others:
                for a, b in ((plan.item_id, other), (other, plan.item_id)):
                    key = layout.cooccurrence(kind, a)
                    ops[stats_marker_key(key, plan.flush_id)].append((key, b, None))
        for marker, event_ops in ops.items():
            call = calls.setdefault(marker, SlotCall([marker]))
            encoded: list[list[Any]] = []
            for key, member, weight in event_ops:
                op: list[Any] = [call.key_index(key), member]
                if weight is not None:
                    op.append(weight)
                encoded.append(op)
            call.events.append([1, plan.member, encoded])
    spec = {
        "ttl": limits.marker_ttl_s,
        "cap": limits.cooccurrence_max_members,
        "co_ttl": limits.cooccurrence_ttl_s,
        "trend_cap": limits.trend_max_items,
    }
    return [
        (call.keys, _encode(spec | {"events": call.events}).decode()) for call in calls.values()
    ]


def markers(calls: Sequence[tuple[list[str], str]]) -> list[str]:
    """The marker sets of a flush's calls (to delete after its plans)."""
    return [keys[0] for keys, _ in calls]
