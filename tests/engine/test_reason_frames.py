"""Sentence frames: evidence values become placeholders, and an answer gets them back."""

from __future__ import annotations

from streamrec.engine.reasons import build_prompt
from streamrec.engine.reasons.frames import SENTINELS, delexicalise, relexicalise
from streamrec.engine.reasons.upgrade import prompt_key


def entry(title: str, event: str = "view", share: float = 0.5) -> dict[str, object]:
    return {"item_id": title.lower(), "title": title, "event": event, "share": share}


def test_titles_categories_tags_and_numbers_become_placeholders():
    evidence = {
        "items": [entry("Heat (1995)"), entry("Ronin", "purchase")],
        "also": {"code": "category_affinity", "category": "Thriller", "count": 3, "of_recent": 8},
    }
    frame, slots = delexicalise(evidence)
    assert frame == {
        "items": [
            {"title": "[ITEM 1]", "event": "view"},
            {"title": "[ITEM 2]", "event": "purchase"},
        ],
        "also": {
            "code": "category_affinity",
            "category": "[CATEGORY]",
            "count": SENTINELS[0],
            "of_recent": SENTINELS[1],
        },
    }
    assert slots == {
        "[ITEM 1]": "Heat (1995)",
        "[ITEM 2]": "Ronin",
        "[CATEGORY]": "Thriller",
        str(SENTINELS[0]): "3",
        str(SENTINELS[1]): "8",
    }


def test_zero_and_one_stay_as_they_are_because_they_decide_the_wording():
    frame, slots = delexicalise({"interactions": 1, "user_history": 0})
    assert frame == {"interactions": 1, "user_history": 0}
    assert slots == {}
    frame, _ = delexicalise({"count": 12, "rank": 1, "half_life": {"value": 1, "unit": "hour"}})
    assert frame == {"count": SENTINELS[0], "rank": 1, "half_life": {"value": 1, "unit": "hour"}}


def test_evidence_of_the_same_shape_gives_the_same_prompt_in_each_language():
    for language in ("en", "zh"):
        a = build_prompt(
            "bought_together", delexicalise({"bought_with": entry("Tent"), "count": 4})[0], language
        )
        b = build_prompt(
            "bought_together",
            delexicalise({"bought_with": entry("Stove"), "count": 9})[0],
            language,
        )
        assert prompt_key(a) == prompt_key(b)
        assert "[ITEM 1]" in a.user
        assert "Tent" not in a.user


def test_relexicalise_puts_every_value_back_in_one_pass():
    _, slots = delexicalise({"items": [entry("Apollo 13")], "count": 5})
    sentinel = str(SENTINELS[0])
    assert (
        relexicalise(f"You viewed [ITEM 1] {sentinel} times", slots)
        == "You viewed Apollo 13 5 times"
    )
    # A title holding a sentinel's digits is not read again.
    _, slots = delexicalise({"items": [entry(f"Route {sentinel}")], "count": 5})
    assert relexicalise(f"[ITEM 1], {sentinel} times", slots) == f"Route {sentinel}, 5 times"
    # A number that is no sentinel is left for the guard to judge.
    assert relexicalise("[ITEM 1], 12 times", slots) == f"Route {sentinel}, 12 times"


def test_an_answer_with_a_placeholder_the_slots_do_not_fill_has_no_sentence():
    _, slots = delexicalise({"items": [entry("Heat")]})
    assert relexicalise("Because you viewed [ITEM 2]", slots) is None
    assert relexicalise("More from [CATEGORY]", slots) is None
    assert relexicalise("Because you viewed [item]", slots) == "Because you viewed [item]"


def test_other_variants_of_a_frame_begin_with_another_phrasings_first_words():
    frame, _ = delexicalise({"items": [entry("Heat", "purchase")]})
    first, second, third = (build_prompt("similar_to_recent", frame, variant=v) for v in range(3))
    assert first.prefix == ""
    assert (second.prefix, third.prefix) == ("Recommended because", "Picked for")
    assert "Begin the sentence with: Recommended because" in second.messages()[1]["content"]
    assert len({prompt_key(p) for p in (first, second, third)}) == 3
    zh = build_prompt("similar_to_recent", frame, "zh", variant=1)
    assert zh.prefix
    assert "《" not in zh.prefix
    assert "句子开头" in zh.messages()[1]["content"]
