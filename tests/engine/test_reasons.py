"""Reasons: evidence from the scoring numbers, text from the evidence alone."""

from __future__ import annotations

import doctest
import importlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.engine.reasons import (
    CitableHistory,
    ReasonParams,
    UnknownReasonCodeError,
    build_reason,
    render,
    tag_counts,
)
from streamrec.engine.types import Interaction, Item

SHOE = Item("s1", "Trail Runner 3", "running", ("shoes",))
JACKET = Item("j1", "Ridge Jacket", "outdoor")
PAN = Item("p1", "Cast Pan", "kitchen")
PARAMS = ReasonParams()


def history(*pairs: tuple[Item, str]) -> tuple[list[Interaction], list[Item]]:
    return [Interaction(i.item_id, t, n) for n, (i, t) in enumerate(pairs)], [i for i, _ in pairs]  # type: ignore[misc]


def test_the_items_that_explain_the_score_are_cited_by_title_and_action():
    hist, items = history((SHOE, "view"), (JACKET, "purchase"), (PAN, "view"))
    cited = CitableHistory(hist, items).cite(np.array([0.5, 0.3, 0.05]), PARAMS)
    assert [c["title"] for c in cited] == ["Trail Runner 3", "Ridge Jacket"]
    reason = build_reason(
        Item("x", "Road Racer", "running"),
        cited=cited,
        categories=Counter(),
        history_length=3,
        cold_start_item=False,
        popularity=5,
        params=PARAMS,
    )
    assert reason.code == "similar_to_recent"
    assert reason.text == "Because you viewed Trail Runner 3 and bought Ridge Jacket"


def test_a_user_who_viewed_only_running_shoes_is_told_about_those_shoes():
    other = Item("s2", "Road Racer 2", "running")
    hist, items = history((SHOE, "view"), (other, "view"))
    cited = CitableHistory(hist, items).cite(np.array([0.6, 0.4]), PARAMS)
    text = build_reason(
        Item("s3", "Tempo Short", "running"),
        cited=cited,
        categories=Counter(),
        history_length=2,
        cold_start_item=False,
        popularity=1,
        params=PARAMS,
    ).text
    assert text == "Because you viewed Trail Runner 3 and Road Racer 2"


def test_repeated_items_add_up_and_are_cited_once_with_their_latest_action():
    hist, items = history((SHOE, "view"), (PAN, "view"), (SHOE, "add_to_cart"))
    cited = CitableHistory(hist, items).cite(np.array([0.3, 0.2, 0.3]), PARAMS)
    assert cited[0] == {
        "item_id": "s1",
        "title": "Trail Runner 3",
        "event": "add_to_cart",
        "share": 0.75,
    }
    assert len(cited) == 2


def test_citing_many_candidates_at_once_cites_each_as_alone():
    hist, items = history((SHOE, "view"), (PAN, "view"), (SHOE, "add_to_cart"), (JACKET, "view"))
    citable = CitableHistory(hist, items)
    rows = np.array(
        [[0.3, 0.2, 0.3, 0.0], [-0.2, -0.1, 0.0, -0.4], [0.0, 0.0, 0.0, 0.0], [0.1, 0.5, 0.0, 0.4]]
    )
    cited = citable.cite_rows(rows, PARAMS)
    shares = [[(c["item_id"], c["event"], c["share"]) for c in row] for row in cited]
    assert shares == [
        [("s1", "add_to_cart", 0.75), ("p1", "view", 0.25)],  # repeats add up
        [],  # nothing positive
        [],  # nothing at all
        [("p1", "view", 0.5), ("j1", "view", 0.4)],  # at most max_cited
    ]
    assert CitableHistory([], []).cite_rows(np.zeros((2, 0)), PARAMS) == [[], []]


def test_weak_or_negative_contributions_are_not_cited():
    hist, items = history((SHOE, "view"), (PAN, "view"))
    assert CitableHistory(hist, items).cite(np.array([-0.2, -0.1]), PARAMS) == []
    assert [
        c["item_id"] for c in CitableHistory(hist, items).cite(np.array([0.95, 0.05]), PARAMS)
    ] == ["s1"]


def test_an_item_is_cited_only_when_it_is_close_to_the_candidate():
    # One viewed item explains all of the positive score of anything; its similarity to
    # the candidate decides whether "similar to" is true.
    hist, items = history(
        (SHOE, "view"),
    )
    citable = CitableHistory(hist, items)
    contributions = np.array([[0.9], [0.03]])
    assert [len(c) for c in citable.cite_rows(contributions, PARAMS)] == [1, 1]
    close_and_far = np.array([[0.9], [0.03]])
    assert [len(c) for c in citable.cite_rows(contributions, PARAMS, close_and_far)] == [1, 0]
    assert citable.cite(np.array([0.03]), ReasonParams(min_similarity=0.0), np.array([0.03]))


def test_a_repeated_item_is_judged_by_its_own_similarity_not_its_repeats():
    hist, items = history((SHOE, "view"), (PAN, "view"), (SHOE, "click"))
    citable, similarities = CitableHistory(hist, items), np.array([0.6, 0.1, 0.6])
    cited = citable.cite(np.array([0.2, 0.1, 0.3]), PARAMS, similarities)
    assert [c["item_id"] for c in cited] == ["s1"]  # the pan explains 17% and is not close
    cited = citable.cite(np.array([0.2, 0.4, 0.3]), PARAMS, similarities)
    assert [(c["item_id"], c["share"]) for c in cited] == [("s1", 0.556)]


def test_category_affinity_states_the_count():
    reason = build_reason(
        PAN,
        cited=[],
        categories=Counter({"kitchen": 3}),
        history_length=5,
        cold_start_item=False,
        popularity=0,
        params=PARAMS,
    )
    assert reason.code == "category_affinity"
    assert reason.text == "Because 3 of your last 5 items were in kitchen"


def test_users_without_history_are_told_it_is_popularity():
    reason = build_reason(
        PAN,
        cited=[],
        categories=Counter(),
        history_length=0,
        cold_start_item=False,
        popularity=42,
        params=PARAMS,
    )
    assert reason.code == "popular"
    assert "42 interactions" in reason.text
    assert "learn your taste" in reason.text


def test_new_arrivals_say_so_and_cite_what_they_are_close_to():
    cited = [{"item_id": "s1", "title": "Trail Runner 3", "event": "click", "share": 1.0}]
    reason = build_reason(
        Item("n", "Trail Runner 4", "running"),
        cited=cited,
        categories=Counter(),
        history_length=1,
        cold_start_item=True,
        popularity=0,
        params=PARAMS,
    )
    assert reason.code == "new_arrival"
    assert reason.text == "New in running, close to what you clicked on Trail Runner 3"


def test_unknown_reason_codes_are_refused():
    with pytest.raises(ValueError, match="unknown reason code"):
        render("because", {})


words = st.text(alphabet=st.characters(categories=("L", "N")), min_size=3, max_size=12)


@given(
    titles=st.lists(words, min_size=1, max_size=6, unique=True),
    shares=st.lists(st.floats(-1, 1, allow_nan=False), min_size=6, max_size=6),
    category=words,
    other_category=words,
    count=st.integers(0, 10),
    cold=st.booleans(),
)
def test_text_is_rendered_from_evidence_that_names_only_real_facts(
    titles, shares, category, other_category, count, cold
):
    items = [Item(f"i{n}", t, other_category) for n, t in enumerate(titles)]
    hist = [Interaction(i.item_id, "view", n) for n, i in enumerate(items)]
    cited = CitableHistory(hist, items).cite(np.array(shares[: len(items)]), PARAMS)
    target = Item("t", "Target", category)
    reason = build_reason(
        target,
        cited=cited,
        categories=Counter({category: count}),
        history_length=len(items),
        cold_start_item=cold,
        popularity=3,
        params=PARAMS,
    )
    # The sentence is a function of the evidence alone...
    assert render(reason.code, reason.evidence) == reason.text
    # ...and the evidence names only the user's own items, with their real titles,
    cited_items = reason.evidence.get("items", reason.evidence.get("similar_items", []))
    by_id = {i.item_id: i.title for i in items}
    assert all(by_id[c["item_id"]] == c["title"] for c in cited_items)
    # and only the recommended item's own category, with the user's real count.
    if "category" in reason.evidence:
        assert reason.evidence["category"] == category
    if "count" in reason.evidence:
        assert reason.evidence["count"] == count


# -- tag affinity and secondary signals ---------------------------------------------------


def reason_for(item, *, cited=(), categories=(), tags=(), history_length=5):
    return build_reason(
        item,
        cited=list(cited),
        categories=Counter(dict(categories)),
        history_length=history_length,
        cold_start_item=False,
        popularity=4,
        params=PARAMS,
        tags=Counter(dict(tags)),
    )


def test_tag_counts_count_each_recent_item_once_per_tag():
    items = [
        Item("a", "A", "c", ("trail", "trail", "waterproof")),
        None,
        Item("b", "B", "c", ("trail",)),
    ]
    assert tag_counts(items) == Counter({"trail": 2, "waterproof": 1})


def test_a_tag_shared_with_more_recent_items_than_the_category_is_the_reason():
    boot = Item("b", "Storm Boot", "outdoor", ("waterproof", "trail"))
    reason = reason_for(boot, categories={"outdoor": 2}, tags={"trail": 3, "waterproof": 1})
    assert reason.code == "tag_affinity"
    assert reason.evidence == {"tag": "trail", "count": 3, "of_recent": 5}
    assert reason.text == "Because 3 of your last 5 items were tagged trail"


def test_the_category_wins_ties_and_weak_tags_are_ignored():
    boot = Item("b", "Storm Boot", "outdoor", ("trail",))
    assert reason_for(boot, categories={"outdoor": 3}, tags={"trail": 3}).code == (
        "category_affinity"
    )
    assert reason_for(boot, categories={}, tags={"trail": 1}).code == "popular"
    assert reason_for(boot, categories={}, tags={"trail": 2}).code == "tag_affinity"


def test_without_tag_counts_there_are_no_tag_reasons():
    boot = Item("b", "Storm Boot", "outdoor", ("trail",))
    reason = build_reason(
        boot,
        cited=[],
        categories=Counter(),
        history_length=5,
        cold_start_item=False,
        popularity=4,
        params=PARAMS,
    )
    assert reason.code == "popular"


def test_cited_items_carry_the_category_habit_as_a_second_signal():
    cited = [{"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 0.8}]
    reason = reason_for(Item("x", "Road Racer", "running"), cited=cited, categories={"running": 3})
    assert reason.code == "similar_to_recent"
    assert reason.evidence["also"] == {
        "code": "category_affinity",
        "category": "running",
        "count": 3,
        "of_recent": 5,
    }
    assert reason.text == (
        "Because you viewed Trail Runner 3, and 3 of your last 5 items were in running"
    )


def test_no_second_signal_without_a_habit():
    cited = [{"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 0.8}]
    reason = reason_for(Item("x", "Road Racer", "running"), cited=cited, categories={"running": 1})
    assert "also" not in reason.evidence
    assert reason.text == "Because you viewed Trail Runner 3"


def test_unknown_codes_raise_the_package_error():
    with pytest.raises(UnknownReasonCodeError):
        render("viral", {})


def test_the_recommender_imports_stay_importable_from_the_package():
    import streamrec.engine.reasons as reasons

    for name in ("CitableHistory", "ReasonParams", "build_reason", "category_counts", "render"):
        assert hasattr(reasons, name)
    assert reasons.Reason("popular", {}, "x").text == "x"


@pytest.mark.parametrize(
    "module", ["evidence", "templates", "guard", "prompt", "generator"], ids=str
)
def test_docstring_examples_hold(module):
    mod = importlib.import_module(f"streamrec.engine.reasons.{module}")
    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0
