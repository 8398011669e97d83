"""Plain, validated value types shared by the engine, the index and the stream layer.

The stream layer decodes Kafka messages into these types at the edge; the engine never
sees raw dicts or Faust records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import msgspec

EventType = Literal["view", "click", "add_to_cart", "purchase"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction, as produced on ``streamrec.events``."""

    event_id: str
    user_id: str
    item_id: str
    type: EventType
    ts: int
    """Epoch milliseconds at which the event happened (set by the producer)."""
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog entry, as produced on ``streamrec.items``."""

    item_id: str
    title: str
    category: str
    tags: tuple[str, ...] = ()
    price: float | None = None
    description: str | None = None
    available: bool = True


class Interaction(msgspec.Struct, frozen=True):
    """One entry of a user's recent history (oldest first in a history sequence).

    A msgspec struct, not a dataclass: every event decodes a user's whole history into
    these, and a struct is built several times faster.
    """

    item_id: str
    type: EventType
    ts: int


@dataclass(frozen=True, slots=True)
class UserState:
    """What the engine knows about a user when it ranks for them."""

    user_id: str
    history: tuple[Interaction, ...]
    """Recent interactions, oldest first, bounded by the configured history length."""
    purchased: frozenset[str] = field(default_factory=frozenset)
    seen: frozenset[str] = field(default_factory=frozenset)
    """Every item the user ever interacted with (not bounded by the history length)."""
    shown: Mapping[str, int] = field(default_factory=dict)
    """How often each item was recommended to the user within the impressions window."""


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One ranked item with the reason shown to the user and the evidence behind it."""

    item_id: str
    rank: int
    score: float
    reason: str
    reason_code: str
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A ranked list published on ``streamrec.recommendations`` for one triggering event."""

    user_id: str
    trigger_event_id: str
    generated_at: int
    model_version: str
    items: tuple[RecommendedItem, ...]
    experiment: str | None = None
    """The running experiment the list was made under, if any."""
    variant: str | None = None
    """The user's arm in it (a variant name, or "holdout")."""

    @property
    def recommendation_id(self) -> str:
        """A stable id of this list: the same user, trigger and model give the same id (so a
        list republished after a crash keeps it). Events may carry it back in
        ``context.recommendation_id`` when the user acts on the list."""
        key = f"{self.user_id}\x1f{self.trigger_event_id}\x1f{self.model_version}"
        return "r-" + hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
