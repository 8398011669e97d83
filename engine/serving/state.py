"""User-state port and its in-memory reference twin.

The production store is Redis (``stream/redis_store.py``); both implement
:class:`UserStore` with the same semantics and pass the same shared tests:

* ``apply`` appends each event to its user's bounded history (oldest first), records
  purchases, and is idempotent per ``event_id`` within the dedupe window: a replayed event
  changes nothing and is reported with ``applied=False``. Every item a user touched is
  remembered in ``seen`` beyond the history window, for "never recommend it again".
  Events are applied in the order given; each result is the user's state right after
  that event.
* ``forget`` deletes everything of a user. With ``until_ms`` it also remembers the request
  so that the user's events stamped at or before that time, still on their way, are
  ignored (``forgotten=True``, empty state) instead of bringing the state back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streamrec.engine.types import Event, Interaction, Recommendation, UserState


@dataclass(frozen=True)
class Applied:
    """The user's state after one event, whether that event was new, and whether it was
    ignored because the user asked to be forgotten after it."""

    state: UserState
    applied: bool
    forgotten: bool = False


class UserStore(Protocol):
    async def apply(self, events: Sequence[Event]) -> list[Applied]: ...

    async def get(self, user_id: str) -> UserState: ...

    async def forget(self, user_id: str, until_ms: int | None = None) -> int: ...


class InMemoryUserStore:
    """Dict-backed :class:`UserStore` for tests and offline replays (no expiry clock)."""

    def __init__(self, history_length: int) -> None:
        self.history_length = history_length
        self._history: dict[str, list[Interaction]] = {}
        self._purchased: dict[str, set[str]] = {}
        self._seen: dict[str, set[str]] = {}
        self._seen_events: set[tuple[str, str]] = set()
        self._forgotten: dict[str, int] = {}
        self.latest: dict[str, Recommendation] = {}

    async def apply(self, events: Sequence[Event]) -> list[Applied]:
        out = []
        for event in events:
            if event.ts <= self._forgotten.get(event.user_id, -1):
                out.append(Applied(UserState(event.user_id, ()), applied=False, forgotten=True))
                continue
            key = (event.user_id, event.event_id)
            applied = key not in self._seen_events
            if applied:
                self._seen_events.add(key)
                history = self._history.setdefault(event.user_id, [])
                history.append(Interaction(event.item_id, event.type, event.ts))
                del history[: -self.history_length]
                self._seen.setdefault(event.user_id, set()).add(event.item_id)
                if event.type == "purchase":
                    self._purchased.setdefault(event.user_id, set()).add(event.item_id)
            out.append(Applied(await self.get(event.user_id), applied))
        return out

    async def get(self, user_id: str) -> UserState:
        return UserState(
            user_id,
            tuple(self._history.get(user_id, ())),
            frozenset(self._purchased.get(user_id, ())),
            frozenset(self._seen.get(user_id, ())),
        )

    async def forget(self, user_id: str, until_ms: int | None = None) -> int:
        gone = sum(
            part.pop(user_id, None) is not None
            for part in (self._history, self._purchased, self._seen, self.latest)
        )
        self._seen_events = {k for k in self._seen_events if k[0] != user_id}
        if until_ms is not None:
            self._forgotten[user_id] = until_ms
        return gone
