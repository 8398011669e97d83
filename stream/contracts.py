"""Kafka message contracts: decode and validate at the edge, encode on the way out.

Schemas live in ``stream/schemas/*.schema.json``; these msgspec structs implement them.
Every rejection raises :class:`InvalidMessage` with a stable ``reason`` (used as the DLQ
reason and metric label) and a human-readable ``detail`` that names the field.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Literal

import msgspec

from streamrec.engine.types import Event, Item, Recommendation, RecommendedItem

MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 4096
MAX_TAGS = 64
# Events from more than a day in the future are a producer clock bug, not data.
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000


class InvalidMessage(ValueError):  # noqa: N818 - a message is what is invalid
    """A message that fails its contract. ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EventMessage(msgspec.Struct, frozen=True):
    event_id: str
    user_id: str
    item_id: str
    type: Literal["view", "click", "add_to_cart", "purchase"]
    ts: int | float  # JSON Schema's integer: 1763856000000.0 is one too
    context: dict[str, Any] | None = None


class ItemMessage(msgspec.Struct, frozen=True):
    item_id: str
    title: str
    category: str
    tags: list[str] = []
    price: float | None = None
    description: str | None = None
    available: bool = True


class ControlMessage(msgspec.Struct, frozen=True):
    type: Literal["forget"]
    user_id: str
    request_id: str | None = None


_event_decoder = msgspec.json.Decoder(EventMessage)
_control_decoder = msgspec.json.Decoder(ControlMessage)
_item_decoder = msgspec.json.Decoder(ItemMessage)
_encoder = msgspec.json.Encoder()


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        msg = "too_large"
        raise InvalidMessage(msg, f"message is {len(raw)} bytes, limit is {max_bytes}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        msg = "schema"
        raise InvalidMessage(msg, str(exc)) from exc
    except msgspec.DecodeError as exc:
        msg = "invalid_json"
        raise InvalidMessage(msg, str(exc)) from exc
    except RecursionError as exc:
        msg = "invalid_json"
        raise InvalidMessage(msg, "JSON is nested too deeply") from exc


def _check_id(field: str, value: str) -> None:
    if not value.strip():
        msg = "schema"
        raise InvalidMessage(msg, f"`{field}` must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        msg = "schema"
        raise InvalidMessage(msg, f"`{field}` is {len(value)} characters, limit is {MAX_ID_LENGTH}")


def decode_event(raw: bytes, *, max_bytes: int, now_ms: int) -> Event:
    """Decode one ``streamrec.events`` message.

    Raises:
        InvalidMessage: reason is one of too_large, invalid_json, schema, bad_timestamp.
    """
    msg: EventMessage = _decode(_event_decoder, raw, max_bytes)
    for field in ("event_id", "user_id", "item_id"):
        _check_id(field, getattr(msg, field))
    ts = msg.ts
    if isinstance(ts, float):
        if not ts.is_integer():
            msg_0 = "schema"
            raise InvalidMessage(msg_0, f"`ts` must be an integer (epoch milliseconds), got {ts}")
        ts = int(ts)
    if ts < 0:
        msg_0 = "bad_timestamp"
        raise InvalidMessage(msg_0, f"`ts` must be epoch milliseconds >= 0, got {msg.ts}")
    if ts > now_ms + MAX_FUTURE_SKEW_MS:
        msg_0 = "bad_timestamp"
        raise InvalidMessage(msg_0, f"`ts` {ts} is more than a day ahead of now ({now_ms})")
    return Event(msg.event_id, msg.user_id, msg.item_id, msg.type, ts, msg.context)


def decode_item(raw: bytes, *, max_bytes: int) -> Item:
    """Decode one ``streamrec.items`` message.

    Raises:
        InvalidMessage: reason is one of too_large, invalid_json, schema.
    """
    msg: ItemMessage = _decode(_item_decoder, raw, max_bytes)
    _check_id("item_id", msg.item_id)
    for field in ("title", "category", "description"):
        value = getattr(msg, field)
        if value is not None and len(value) > MAX_TEXT_LENGTH:
            msg_0 = "schema"
            raise InvalidMessage(msg_0, f"`{field}` is longer than {MAX_TEXT_LENGTH} characters")
    if not msg.title.strip():
        msg_0 = "schema"
        raise InvalidMessage(msg_0, "`title` must be a non-empty string")
    if len(msg.tags) > MAX_TAGS:
        msg_0 = "schema"
        raise InvalidMessage(msg_0, f"`tags` has {len(msg.tags)} entries, limit is {MAX_TAGS}")
    if msg.price is not None and (not math.isfinite(msg.price) or msg.price < 0):
        msg_0 = "schema"
        raise InvalidMessage(msg_0, f"`price` must be a finite number >= 0, got {msg.price}")
    return Item(
        msg.item_id,
        msg.title,
        msg.category,
        tuple(msg.tags),
        msg.price,
        msg.description,
        msg.available,
    )


def decode_control(raw: bytes, *, max_bytes: int) -> ControlMessage:
    """Decode one ``streamrec.control`` message.

    Raises:
        InvalidMessage: reason is one of too_large, invalid_json, schema.
    """
    msg: ControlMessage = _decode(_control_decoder, raw, max_bytes)
    _check_id("user_id", msg.user_id)
    if msg.request_id is not None and len(msg.request_id) > MAX_ID_LENGTH:
        msg_0 = "schema"
        raise InvalidMessage(msg_0, f"`request_id` is longer than {MAX_ID_LENGTH} characters")
    return msg


def encode_control(msg: ControlMessage) -> bytes:
    return _encoder.encode(msg)


def recommendation_to_dict(rec: Recommendation) -> dict[str, Any]:
    return {
        "recommendation_id": rec.recommendation_id,
        "experiment": rec.experiment,
        "variant": rec.variant,
        "user_id": rec.user_id,
        "trigger_event_id": rec.trigger_event_id,
        "generated_at": rec.generated_at,
        "model_version": rec.model_version,
        "items": [
            {
                "item_id": it.item_id,
                "rank": it.rank,
                "score": it.score,
                "reason": it.reason,
                "reason_code": it.reason_code,
                "evidence": dict(it.evidence),
            }
            for it in rec.items
        ],
    }


class _ItemOut(msgspec.Struct, frozen=True):
    item_id: str
    rank: int
    score: float
    reason: str
    reason_code: str
    evidence: dict[str, Any] = {}


class _RecommendationOut(msgspec.Struct, frozen=True):
    user_id: str
    trigger_event_id: str
    generated_at: int
    model_version: str
    items: list[_ItemOut]
    experiment: str | None = None
    variant: str | None = None


_recommendation_decoder = msgspec.json.Decoder(_RecommendationOut)


def recommendation_from_json(raw: bytes) -> Recommendation:
    """Decode one ``streamrec.recommendations`` message (raises msgspec errors on a
    message that is not one)."""
    msg = _recommendation_decoder.decode(raw)
    return Recommendation(
        msg.user_id,
        msg.trigger_event_id,
        msg.generated_at,
        msg.model_version,
        tuple(
            RecommendedItem(i.item_id, i.rank, i.score, i.reason, i.reason_code, i.evidence)
            for i in msg.items
        ),
        msg.experiment,
        msg.variant,
    )


def encode_recommendation(rec: Recommendation) -> bytes:
    return _encoder.encode(recommendation_to_dict(rec))


def item_to_dict(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "category": item.category,
        "tags": list(item.tags),
        "price": item.price,
        "description": item.description,
        "available": item.available,
    }


def encode_item(item: Item) -> bytes:
    return _encoder.encode(item_to_dict(item))


def encode_event(event: Event) -> bytes:
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type,
        "ts": event.ts,
    }
    if event.context is not None:
        body["context"] = dict(event.context)
    return _encoder.encode(body)


def encode_dead_letter(
    raw: bytes,
    *,
    reason: str,
    error: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    failed_at: int,
) -> bytes:
    """A ``streamrec.events.dlq`` record: the original bytes (base64) and the error.

    The record must fit a Kafka message (1 MB by default), so an original over
    :data:`DLQ_ORIGINAL_MAX_BYTES` keeps only its first bytes (``original_truncated``; the
    whole message is still at ``source`` while the topic retains it), and the text form
    comes only with originals of at most :data:`DLQ_TEXT_MAX_BYTES`.
    """
    kept = raw[:DLQ_ORIGINAL_MAX_BYTES]
    text: str | None = None
    if len(raw) <= DLQ_TEXT_MAX_BYTES:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return _encoder.encode(
        {
            "reason": reason,
            "error": error[:2000],
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "failed_at": failed_at,
            "original_b64": base64.b64encode(kept).decode("ascii"),
            "original_text": text,
            "original_size": len(raw),
            "original_truncated": len(kept) < len(raw),
        }
    )


#: The most of an original message a dead letter carries (base64 makes it 4/3 larger).
DLQ_ORIGINAL_MAX_BYTES = 512 * 1024
#: Originals up to this size also come as text (JSON escapes can make text 6x larger).
DLQ_TEXT_MAX_BYTES = 64 * 1024
#: The most of an original key a dead letter keeps as its own key.
DLQ_KEY_MAX_BYTES = 4096


class ReasonUpdateItem(msgspec.Struct, frozen=True):
    item_id: str
    rank: int
    reason: str
    reason_code: str
    written_by: Literal["model"] = "model"


class ReasonUpdateMessage(msgspec.Struct, frozen=True):
    """One ``streamrec.reason-updates`` message (``schemas/reason_update.schema.json``):
    model-written reasons for items of a published list."""

    recommendation_id: str
    user_id: str
    trigger_event_id: str
    list_generated_at: int
    upgraded_at: int
    language: Literal["en", "zh"]
    items: list[ReasonUpdateItem]


_reason_update_decoder = msgspec.json.Decoder(ReasonUpdateMessage)


def encode_reason_update(msg: ReasonUpdateMessage) -> bytes:
    return _encoder.encode(msg)


def decode_reason_update(raw: bytes) -> ReasonUpdateMessage:
    """Decode one ``streamrec.reason-updates`` message (msgspec errors on anything else)."""
    return _reason_update_decoder.decode(raw)
