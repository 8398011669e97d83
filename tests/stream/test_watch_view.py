"""The live view names what the user did before each list, so its reasons can be checked."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from rich.console import Console

from streamrec.engine.types import Event
from streamrec.stream.cli.watch import (
    EVENT_VERBS,
    Trigger,
    TriggerMemory,
    item_line,
    render,
    trigger_line,
)
from streamrec.stream.contracts import encode_event

TITLES = {"1": "Toy Story (1995)", "50": "Star Wars (1977)", "181": "Return of the Jedi (1983)"}


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("view", "u42 viewed Toy Story (1995)"),
        ("click", "u42 clicked Toy Story (1995)"),
        ("add_to_cart", "u42 added to cart Toy Story (1995)"),
        ("purchase", "u42 bought Toy Story (1995)"),
    ],
)
def test_trigger_line_names_the_user_the_event_type_and_the_item_title(kind: str, line: str):
    assert trigger_line("u42", "e1", Trigger("1", kind), TITLES) == line


def test_every_event_type_of_the_contract_has_a_verb():
    assert set(EVENT_VERBS) == {"view", "click", "add_to_cart", "purchase"}


def test_an_unknown_title_shows_the_item_id_and_an_unknown_trigger_the_event_id():
    assert trigger_line("u42", "e1", Trigger("999", "view"), TITLES) == "u42 viewed 999"
    assert trigger_line("u42", "ml100k-7", None, TITLES) == "u42 after event ml100k-7"


def test_item_line_shows_rank_title_reason_and_code():
    item = {
        "item_id": "181",
        "rank": 1,
        "score": 0.9,
        "reason": "Because you viewed Star Wars (1977)",
        "reason_code": "similar_to_recent",
        "evidence": {},
    }
    assert item_line(item, TITLES) == (
        "1. Return of the Jedi (1983)",
        "Because you viewed Star Wars (1977)",
        "[similar_to_recent]",
    )


def _recommendation(user: str, event_id: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "trigger_event_id": event_id,
        "model_version": "m1",
        "items": [
            {
                "item_id": "181",
                "rank": 1,
                "reason": "Because you viewed Star Wars (1977)",
                "reason_code": "similar_to_recent",
            }
        ],
    }


def test_the_screen_shows_each_list_under_its_trigger():
    console = Console(record=True, width=120)
    recent = deque([_recommendation("u42", "e1"), _recommendation("u7", "e2")])
    known = {"e1": Trigger("50", "view")}
    console.print(render(recent, TITLES, 2, 1.0, "", 3, known.get))
    screen = console.export_text()
    assert "u42 viewed Star Wars (1977)" in screen
    assert "u7 after event e2" in screen
    assert "1. Return of the Jedi (1983)  Because you viewed Star Wars (1977)" in screen
    assert screen.index("u7 after event e2") < screen.index("u42 viewed")  # newest first


def test_trigger_memory_reads_events_and_forgets_the_oldest_first():
    memory = TriggerMemory(capacity=2)
    for n, kind in enumerate(("view", "click", "purchase")):
        memory.add_message(encode_event(Event(f"e{n}", "u1", f"i{n}", kind, 1_000 + n, None)))
    assert len(memory) == 2
    assert memory.get("e0") is None
    assert memory.get("e1") == Trigger("i1", "click")
    assert memory.get("e2") == Trigger("i2", "purchase")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        json.dumps({"event_id": "e1", "item_id": 5, "type": "view"}).encode(),
        json.dumps({"event_id": "e1", "type": "view"}).encode(),
    ],
)
def test_trigger_memory_skips_what_is_not_an_event(raw: bytes | None):
    memory = TriggerMemory()
    memory.add_message(raw)
    assert len(memory) == 0


def test_trigger_memory_needs_room_for_one_event():
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        TriggerMemory(capacity=0)
