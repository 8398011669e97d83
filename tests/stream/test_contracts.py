"""Message contracts: what is accepted, what goes to the DLQ and why; never a crash."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.engine.types import Event, Item, Recommendation, RecommendedItem
from streamrec.stream.contracts import (
    ControlMessage,
    InvalidMessage,
    decode_control,
    decode_event,
    decode_item,
    encode_control,
    encode_dead_letter,
    encode_event,
    encode_item,
    encode_recommendation,
)

NOW = 1_700_000_000_000
SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def event_bytes(**overrides: object) -> bytes:
    body = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def decode(raw: bytes) -> Event:
    return decode_event(raw, max_bytes=65536, now_ms=NOW)


class TestEvents:
    def test_a_valid_event_decodes_with_context(self):
        event = decode(event_bytes(context={"page": "home"}))
        assert event == Event("e1", "u1", "i1", "view", NOW, {"page": "home"})

    def test_unknown_extra_fields_are_tolerated(self):
        assert decode(event_bytes(session="s9")).event_id == "e1"

    @pytest.mark.parametrize(
        ("raw", "reason", "names"),
        [
            (b"{not json", "invalid_json", ""),
            (b"\xff\xfe\x00garbage", "invalid_json", ""),
            (event_bytes(user_id=...), "schema", "user_id"),
            (event_bytes(ts="yesterday"), "schema", "ts"),
            (event_bytes(ts=1.5), "schema", "ts"),
            (event_bytes(type="like"), "schema", "type"),
            (event_bytes(item_id=42), "schema", "item_id"),
            (event_bytes(user_id=""), "schema", "user_id"),
            (event_bytes(user_id="x" * 300), "schema", "user_id"),
            (event_bytes(ts=-5), "bad_timestamp", "ts"),
            (event_bytes(ts=NOW + 3 * 86_400_000), "bad_timestamp", "ts"),
            (b"[1, 2, 3]", "schema", ""),
        ],
    )
    def test_bad_events_are_rejected_with_a_reason_naming_the_field(self, raw, reason, names):
        with pytest.raises(InvalidMessage) as err:
            decode(raw)
        assert err.value.reason == reason
        assert names in err.value.detail

    def test_oversized_messages_are_rejected_before_parsing(self):
        with pytest.raises(InvalidMessage) as err:
            decode_event(event_bytes(context={"x": "y" * 1000}), max_bytes=256, now_ms=NOW)
        assert err.value.reason == "too_large"

    def test_deeply_nested_context_does_not_crash(self):
        deep = b'{"context":' * 5000 + b"1" + b"}" * 5000
        with pytest.raises(InvalidMessage):
            decode_event(deep, max_bytes=1 << 20, now_ms=NOW)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=512))
    def test_arbitrary_bytes_never_crash_the_decoder(self, raw):
        reason = "accepted"
        try:
            decode(raw)
        except InvalidMessage as exc:
            reason = exc.reason
        assert reason in {"accepted", "invalid_json", "schema", "bad_timestamp", "too_large"}

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["event_id", "user_id", "item_id", "type", "ts", "context"]),
            st.one_of(
                st.none(),
                st.integers(),
                st.floats(),
                st.text(),
                st.booleans(),
                st.lists(st.integers()),
            ),
        )
    )
    def test_arbitrary_json_objects_decode_or_are_rejected(self, body):
        try:
            event = decode(json.dumps(body).encode())
        except InvalidMessage:
            return
        assert event.type in {"view", "click", "add_to_cart", "purchase"}
        assert event.ts >= 0

    def test_a_timestamp_written_as_a_whole_float_is_an_integer(self):
        assert decode(event_bytes(ts=float(NOW))).ts == NOW
        jsonschema.validate(json.loads(event_bytes(ts=float(NOW))), schema("event"))

    @settings(max_examples=300, deadline=None)
    @given(
        st.fixed_dictionaries(
            {
                "event_id": st.one_of(st.text(max_size=5), st.sampled_from([" ", "\t\n", "e1"])),
                "user_id": st.one_of(st.text(max_size=300), st.sampled_from(["\u3000", "u"])),
                "item_id": st.one_of(st.text(max_size=5), st.integers(), st.none()),
                "type": st.sampled_from(["view", "purchase", "like", ""]),
                "ts": st.one_of(
                    st.integers(min_value=-5, max_value=NOW),
                    st.floats(min_value=-5, max_value=NOW),
                    st.booleans(),
                    st.text(max_size=3),
                ),
            },
            optional={"context": st.one_of(st.none(), st.integers(), st.just({"page": 1}))},
        )
    )
    def test_the_decoder_accepts_exactly_what_the_published_schema_accepts(self, body):
        """Producers validate against stream/schemas; a message the schema allows must not
        be dead-lettered as schema-invalid, and the other way round (timestamps in the past
        here: the one-day-ahead bound is the worker's, beyond the schema)."""
        valid = jsonschema.Draft202012Validator(schema("event")).is_valid(body)
        try:
            decode(json.dumps(body).encode())
            decoded = "accepted"
        except InvalidMessage as exc:
            decoded = f"rejected: {exc}"
        assert (decoded == "accepted") == valid, decoded

    def test_encoded_events_round_trip_and_match_the_schema(self):
        event = Event("e7", "u7", "i7", "purchase", NOW, {"recommendation_id": "r1"})
        raw = encode_event(event)
        jsonschema.validate(json.loads(raw), schema("event"))
        assert decode(raw) == event


class TestItems:
    def test_defaults_make_a_minimal_item_available(self):
        item = decode_item(
            b'{"item_id":"i1","title":"Ridge Jacket","category":"outdoor"}', max_bytes=4096
        )
        assert item == Item("i1", "Ridge Jacket", "outdoor", (), None, None, True)

    def test_items_round_trip_and_match_the_schema(self):
        item = Item("i2", "Trail Runner 3", "running", ("shoes", "trail"), 129.0, "Light.", False)
        raw = encode_item(item)
        jsonschema.validate(json.loads(raw), schema("item"))
        assert decode_item(raw, max_bytes=4096) == item

    @pytest.mark.parametrize(
        "body",
        [
            {"item_id": "i", "title": "", "category": "c"},
            {"item_id": "i", "title": "t", "category": "c", "price": -1},
            {"item_id": "i", "title": "t", "category": "c", "tags": "notalist"},
            {"item_id": "i", "title": "t", "category": "c", "tags": ["x"] * 100},
            {"title": "t", "category": "c"},
        ],
    )
    def test_bad_items_are_rejected(self, body):
        with pytest.raises(InvalidMessage):
            decode_item(json.dumps(body).encode(), max_bytes=65536)


def test_recommendations_match_their_schema():
    rec = Recommendation(
        "u1",
        "e1",
        NOW,
        "item2vec-1",
        (
            RecommendedItem(
                "i1",
                1,
                0.9,
                "Because you viewed X",
                "similar_to_recent",
                {"items": [{"item_id": "i0", "title": "X", "event": "view", "share": 1.0}]},
            ),
        ),
    )
    jsonschema.validate(json.loads(encode_recommendation(rec)), schema("recommendation"))


def test_dead_letters_keep_the_original_bytes_and_match_their_schema():
    raw = b"\xff not utf-8"
    body = json.loads(
        encode_dead_letter(
            raw, reason="invalid_json", error="bad", topic="t", partition=0, offset=5, failed_at=NOW
        )
    )
    jsonschema.validate(body, schema("dead_letter"))
    assert base64.b64decode(body["original_b64"]) == raw
    assert body["original_text"] is None
    assert body["original_size"] == len(raw)
    assert body["original_truncated"] is False


@pytest.mark.parametrize("size", [800_000, 5_000_000])
def test_a_dead_letter_fits_a_kafka_message_whatever_the_size_of_the_original(size):
    """An 800 KB event is accepted by a broker with the default 1 MB limit; its dead letter,
    with the original as base64, would not be, and the worker could not publish it."""
    raw = b'{"event_id": "' + b"x" * size + b'"}'
    value = encode_dead_letter(
        raw, reason="too_large", error="big", topic="t", partition=0, offset=5, failed_at=NOW
    )
    assert len(value) < 1_000_000  # the Kafka producers' default max request size
    body = json.loads(value)
    jsonschema.validate(body, schema("dead_letter"))
    assert body["original_truncated"] is True
    assert body["original_size"] == len(raw)
    assert raw.startswith(base64.b64decode(body["original_b64"]))
    assert len(base64.b64decode(body["original_b64"])) == 512 * 1024


def test_a_dead_letter_of_a_small_message_has_its_text_even_when_escapes_bloat_it():
    raw = b"\x01" * 60_000  # 60 KB that JSON-escapes to 6 bytes a character
    body = json.loads(
        encode_dead_letter(
            raw, reason="schema", error="x", topic="t", partition=0, offset=5, failed_at=NOW
        )
    )
    assert body["original_text"] == raw.decode()
    assert body["original_truncated"] is False


class TestControlMessages:
    def test_a_forget_request_decodes_and_matches_the_schema(self):
        raw = encode_control(ControlMessage("forget", "u9", request_id="ticket-7"))
        jsonschema.validate(json.loads(raw), schema("control"))
        assert decode_control(raw, max_bytes=1024) == ControlMessage("forget", "u9", "ticket-7")

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b'{"type": "forget"}', "schema"),
            (b'{"type": "erase-everything", "user_id": "u"}', "schema"),
            (b'{"type": "forget", "user_id": "  "}', "schema"),
            (b"\xff\xfe", "invalid_json"),
            (b'{"type": "forget", "user_id": "' + b"u" * 2000 + b'"}', "too_large"),
        ],
    )
    def test_bad_requests_are_rejected_with_a_reason(self, raw, reason):
        with pytest.raises(InvalidMessage) as caught:
            decode_control(raw, max_bytes=1024)
        assert caught.value.reason == reason

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=256))
    def test_arbitrary_bytes_never_crash_the_control_decoder(self, raw):
        reason = "accepted"
        try:
            decode_control(raw, max_bytes=1024)
        except InvalidMessage as exc:
            reason = exc.reason
        assert reason in {"accepted", "invalid_json", "schema", "too_large"}


def test_reason_updates_round_trip_and_match_their_schema():
    from streamrec.stream.contracts import (
        ReasonUpdateItem,
        ReasonUpdateMessage,
        decode_reason_update,
        encode_reason_update,
    )

    msg = ReasonUpdateMessage(
        recommendation_id="r-1",
        user_id="ann",
        trigger_event_id="e1",
        list_generated_at=NOW,
        upgraded_at=NOW + 800,
        language="zh",
        items=[ReasonUpdateItem("i1", 1, "因为你浏览过《Trail Runner 3》", "similar_to_recent")],
    )
    raw = encode_reason_update(msg)
    jsonschema.validate(json.loads(raw), schema("reason_update"))
    assert decode_reason_update(raw) == msg
    empty = {**json.loads(raw), "items": []}
    assert not jsonschema.Draft202012Validator(schema("reason_update")).is_valid(empty)
