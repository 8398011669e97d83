"""Raw Redis replies become engine values: bytes (the worker's client) or str replies."""

from __future__ import annotations

import msgspec
import pytest

from streamrec.engine.types import Interaction
from streamrec.stream.redis_store.replies import interactions, user_state


def entry(item: str, kind: str, ts: int) -> bytes:
    return msgspec.json.encode([item, kind, ts])


def test_a_history_decodes_in_order_from_bytes_or_str_entries():
    raw = [entry("a", "view", 1), entry('say "hi"', "purchase", 2), entry("é", "click", 3)]
    expected = (
        Interaction("a", "view", 1),
        Interaction('say "hi"', "purchase", 2),
        Interaction("é", "click", 3),
    )
    assert interactions(raw) == expected
    assert interactions([r.decode() for r in raw]) == expected
    assert interactions([]) == ()


def test_a_user_state_from_the_apply_scripts_reply():
    state = user_state(
        "u1",
        [entry("a", "view", 1), entry("b", "purchase", 2)],
        [b"b"],
        [b"a", b"b", b"old"],
        [b"c", b"2"],
    )
    assert state.history == (Interaction("a", "view", 1), Interaction("b", "purchase", 2))
    assert state.purchased == frozenset({"b"})
    assert state.seen == frozenset({"a", "b", "old"})
    assert state.shown == {"c": 2}


def test_a_corrupt_history_entry_is_an_error_not_a_silent_gap():
    with pytest.raises(msgspec.DecodeError):
        interactions([entry("a", "view", 1), b"not json"])
