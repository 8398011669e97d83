"""Decoding raw Redis replies (RESP2 or RESP3, bytes or str) into plain values."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from streamrec.engine.types import Interaction, UserState

log = logging.getLogger(__name__)

_decode_entries = msgspec.json.Decoder(list[tuple[str, str, int]]).decode
encode_json = msgspec.json.Encoder().encode


def user_state(
    user_id: str, history: Sequence[bytes], purchased: Any, seen: Any, shown: Any
) -> UserState:
    return UserState(
        user_id, interactions(history), strings(purchased), strings(seen), shown_counts(shown)
    )


def interactions(history: Sequence[bytes | str]) -> tuple[Interaction, ...]:
    """History entries (each JSON ``[item_id, type, ts]``), oldest first, decoded in one
    call: the entries joined into one JSON array."""
    if not history:
        return ()
    try:
        joined = b",".join(history)  # type: ignore[arg-type]
    except TypeError:  # str replies (decode_responses)
        joined = ",".join(map(member, history)).encode()
    rows = _decode_entries(b"[" + joined + b"]")
    return tuple([Interaction(i, t, ts) for i, t, ts in rows])  # type: ignore[arg-type]


def shown_counts(raw: Any) -> dict[str, int]:
    """HGETALL as a dict (redis-py) or as a flat [field, value, ...] list (from Lua)."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {member(k): int(v) for k, v in pairs}


def at_most(ts: int, now_ms: int | None) -> int:
    return ts if now_ms is None else min(ts, now_ms)


def member(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def pairs(rows: Any) -> Iterable[tuple[Any, Any]]:
    """(member, score) pairs of a raw WITHSCORES reply: nested ``[[m, s], ...]`` (RESP3)
    or flat ``[m, s, m, s, ...]`` (RESP2)."""
    if rows and isinstance(rows[0], list | tuple):
        return rows  # type: ignore[no-any-return]
    return zip(rows[::2], rows[1::2], strict=True)


def scored(rows: Any) -> list[tuple[str, float]]:
    return [(member(m), float(score)) for m, score in pairs(rows)]


def counts(rows: Any) -> dict[str, int]:
    return {member(m): round(float(score)) for m, score in pairs(rows)}


def strings(members: Any) -> frozenset[str]:
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
