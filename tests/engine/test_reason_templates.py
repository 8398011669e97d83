"""Template sentences: varied, deterministic, bilingual, never repeated in a list, and
never naming anything the evidence does not hold."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.engine.reasons import (
    REASON_CODES,
    CitableHistory,
    Guard,
    ReasonParams,
    ReasonRequest,
    SessionPartners,
    TemplateGenerator,
    UnknownReasonCodeError,
    build_reason,
    category_counts,
    render,
    tag_counts,
    trend_evidence,
)
from streamrec.engine.serving.item_stats import ItemStats, TrendingItem
from streamrec.engine.types import Interaction, Item

EN, ZH = TemplateGenerator("en"), TemplateGenerator("zh")
SHOES = [Item("s1", "Trail Runner 3", "running"), Item("s2", "Road Racer 2", "running")]
CATALOG = [*SHOES, Item("j1", "Ridge Jacket", "outdoor"), Item("p1", "Cast Pan", "kitchen")]
GUARD = Guard([i.title for i in CATALOG], {i.category for i in CATALOG})


def assert_faithful(guard: Guard, sentence: str, evidence, code: str, *, generic: bool) -> None:
    """Faithful to the guard; the generic phrasings state no fact and name no item, so
    only they may be "ungrounded" and "uncited"."""
    result = guard.check(sentence, evidence, code=code)
    allowed = {"ungrounded", "uncited"} if generic else set()
    assert result.kinds <= allowed, (sentence, result.violations)


def cite(title: str, event: str, item_id: str = "i") -> dict[str, object]:
    return {"item_id": item_id, "title": title, "event": event, "share": 0.5}


EVIDENCE = {
    "similar_to_recent": {"items": [cite("Trail Runner 3", "view")]},
    "category_affinity": {"category": "running", "count": 3, "of_recent": 5},
    "tag_affinity": {"tag": "trail", "count": 3, "of_recent": 5},
    "new_arrival": {"category": "running", "similar_items": [cite("Trail Runner 3", "click")]},
    "popular": {"interactions": 42, "user_history": 4},
    "bought_together": {
        "bought_with": {"item_id": "s1", "title": "Trail Runner 3", "event": "view"},
        "count": 4,
    },
    "viewed_together": {
        "viewed_with": {"item_id": "j1", "title": "Ridge Jacket", "event": "purchase"},
        "count": 7,
    },
    "trending": {"count": 12, "rank": 2, "half_life": {"value": 1, "unit": "hour"}},
}


def shoe_reason() -> tuple[str, dict[str, object]]:
    """A user who viewed only running shoes, and a shoe explained by both of them."""
    history = [Interaction(i.item_id, "view", n) for n, i in enumerate(SHOES)]
    cited = CitableHistory(history, SHOES).cite(np.array([0.6, 0.4]), ReasonParams())
    reason = build_reason(
        Item("s3", "Tempo Short", "running"),
        cited=cited,
        categories=Counter(),
        history_length=2,
        cold_start_item=False,
        popularity=1,
        params=ReasonParams(),
    )
    return reason.code, dict(reason.evidence)


def test_a_user_who_viewed_only_running_shoes_is_told_about_those_shoes_in_english():
    code, evidence = shoe_reason()
    assert EN.canonical(code, evidence) == "Because you viewed Trail Runner 3 and Road Racer 2"
    for sentence in EN.render_list([(code, evidence)] * 5):
        assert "Trail Runner 3" in sentence or sentence in EN.phrasings(code, evidence)[-1]


def test_a_user_who_viewed_only_running_shoes_is_told_about_those_shoes_in_chinese():
    code, evidence = shoe_reason()
    assert ZH.canonical(code, evidence) == "因为你浏览过《Trail Runner 3》和《Road Racer 2》"
    assert all("《Trail Runner 3》" in s for s in ZH.phrasings(code, evidence)[0])


@pytest.mark.parametrize(
    ("event", "verb"),
    [
        ("view", "浏览过"),
        ("click", "点击过"),
        ("add_to_cart", "加入过购物车"),
        ("purchase", "购买过"),
    ],
)
def test_chinese_sentences_use_the_verb_of_each_event_type(event, verb):
    evidence = {"items": [cite("Ridge Jacket", event)]}
    assert verb in ZH.canonical("similar_to_recent", evidence)
    assert GUARD.check(ZH.canonical("similar_to_recent", evidence), evidence).ok


def test_mixed_actions_are_each_said_with_their_own_verb():
    evidence = {"items": [cite("Trail Runner 3", "view"), cite("Ridge Jacket", "purchase")]}
    assert EN.canonical("similar_to_recent", evidence) == (
        "Because you viewed Trail Runner 3 and bought Ridge Jacket"
    )
    assert ZH.canonical("similar_to_recent", evidence) == (
        "因为你浏览过《Trail Runner 3》，还购买过《Ridge Jacket》"
    )


def test_two_signals_are_said_together_when_the_evidence_carries_both():
    evidence = {
        "items": [cite("Trail Runner 3", "view")],
        "also": {"code": "category_affinity", "category": "running", "count": 3, "of_recent": 5},
    }
    assert EN.canonical("similar_to_recent", evidence) == (
        "Because you viewed Trail Runner 3, and 3 of your last 5 items were in running"
    )
    assert ZH.canonical("similar_to_recent", evidence) == (
        "因为你浏览过《Trail Runner 3》，而且你最近的5件商品中有3件属于「running」"
    )
    tagged = {
        **evidence,
        "also": {"code": "tag_affinity", "tag": "trail", "count": 4, "of_recent": 5},
    }
    assert EN.canonical("similar_to_recent", tagged).endswith(
        "4 of your last 5 items were tagged trail"
    )


def test_the_remembered_habit_phrases_never_mix_up_evidence_that_compares_equal():
    gen = TemplateGenerator("en")
    habit = {"code": "category_affinity", "category": "running", "count": 3, "of_recent": 5}
    as_float = {**habit, "count": 3.0}  # == 3, hashes like 3, reads differently
    for _ in range(2):  # the second time from the memo
        texts = [
            gen.canonical(
                "similar_to_recent", {"items": [cite("Trail Runner 3", "view")], "also": h}
            )
            for h in (habit, as_float, {**habit, "tags": ["x"]})
        ]
        assert texts[0].endswith("3 of your last 5 items were in running")
        assert texts[1].endswith("3.0 of your last 5 items were in running")
        assert texts[2] == texts[0]  # an unhashable value: rendered without the memo


@pytest.mark.parametrize("generator", [EN, ZH], ids=["en", "zh"])
@pytest.mark.parametrize("code", REASON_CODES)
def test_every_code_has_at_least_three_faithful_phrasings_per_language(generator, code):
    tiers = generator.phrasings(code, EVIDENCE[code])
    specific = [s for tier in tiers[:-1] for s in tier]  # all but the generic tier
    assert len(tiers[0]) >= 3
    assert len(set(specific)) == len(specific)
    for sentence in specific:
        assert_faithful(GUARD, sentence, EVIDENCE[code], code, generic=False)
    for sentence in tiers[-1]:
        assert_faithful(GUARD, sentence, EVIDENCE[code], code, generic=True)


def test_the_module_render_is_the_canonical_english_sentence():
    for code, evidence in EVIDENCE.items():
        assert render(code, evidence) == EN.canonical(code, evidence)
    assert render("popular", {"interactions": 9, "user_history": 0}) == (
        "Popular with other users (9 interactions) while we learn your taste"
    )


def test_the_phrasing_is_a_deterministic_function_of_item_and_code():
    evidence = EVIDENCE["category_affinity"]
    first = [EN.render("category_affinity", evidence, item_id=f"i{n}") for n in range(40)]
    again = [
        TemplateGenerator("en").render("category_affinity", evidence, item_id=f"i{n}")
        for n in range(40)
    ]
    assert first == again
    assert len(set(first)) >= 3  # different items get different phrasings
    salted = TemplateGenerator("en", salt="v2")
    assert [
        salted.render("category_affinity", evidence, item_id=f"i{n}") for n in range(40)
    ] != first


@pytest.mark.parametrize("generator", [EN, ZH], ids=["en", "zh"])
def test_no_sentence_repeats_within_a_list_even_when_the_evidence_does(generator):
    reasons = [(code, EVIDENCE[code]) for code in REASON_CODES for _ in range(5)]
    reasons += [("category_affinity", EVIDENCE["category_affinity"])] * 10
    sentences = generator.render_list(reasons, [f"item-{n}" for n in range(len(reasons))])
    assert len(sentences) == len(reasons)
    assert len(set(sentences)) == len(sentences)
    generic = set(generator.phrasings("popular", EVIDENCE["popular"])[-1])
    for (code, evidence), sentence in zip(reasons, sentences, strict=True):
        assert_faithful(GUARD, sentence, evidence, code, generic=sentence in generic)


def test_the_first_item_of_a_list_gets_its_own_preferred_phrasing():
    evidence = EVIDENCE["popular"]
    alone = EN.render("popular", evidence, item_id="a")
    assert EN.render_list([("popular", evidence)], ["a"]) == [alone]


def test_generate_keeps_lists_and_languages_apart():
    evidence = EVIDENCE["popular"]
    requests = [
        ReasonRequest("popular", evidence, "en", item_id="a", list_id="u1"),
        ReasonRequest("popular", evidence, "en", item_id="b", list_id="u1"),
        ReasonRequest("popular", evidence, "zh", item_id="a", list_id="u1"),
        ReasonRequest("popular", evidence, "en", item_id="a", list_id="u2"),
    ]
    texts = EN.generate(requests)
    assert texts[0] != texts[1]
    assert "42次互动" in (texts[2] or "") or "其他用户" in (texts[2] or "")
    assert texts[3] == texts[0]  # another list, same item: same sentence


def test_unknown_codes_and_languages_are_refused():
    with pytest.raises(UnknownReasonCodeError, match="unknown reason code 'viral'"):
        EN.render_list([("viral", {})])
    with pytest.raises(ValueError, match="language"):
        TemplateGenerator("fr")  # type: ignore[arg-type]


def test_malformed_evidence_falls_back_to_what_it_still_supports():
    assert EN.canonical("category_affinity", {"category": "running"}) == "More from running"
    assert EN.canonical("similar_to_recent", {"items": [{"title": ""}]}) == "Another pick for you"
    assert EN.canonical("new_arrival", {"category": "", "similar_items": []}) == "New arrival"


# -- property: no template names a title or category that the evidence does not hold ----

TITLE = (
    st.text(alphabet="αβγδεζηθ ", min_size=2, max_size=10)
    .map(str.strip)
    .filter(lambda t: len(t) >= 2)
)
CATEGORY = st.text(alphabet="κλμνξ", min_size=2, max_size=5)
TAG = st.text(alphabet="πρστυ", min_size=2, max_size=5)
EVENT = st.sampled_from(["view", "click", "add_to_cart", "purchase"])


@st.composite
def shop_reason(draw):
    titles = draw(st.lists(TITLE, min_size=2, max_size=8, unique=True))
    categories = draw(st.lists(CATEGORY, min_size=1, max_size=4, unique=True))
    tags = draw(st.lists(TAG, min_size=1, max_size=4, unique=True))
    items = [
        Item(
            f"i{n}",
            title,
            draw(st.sampled_from(categories)),
            tuple(draw(st.lists(st.sampled_from(tags), max_size=3))),
        )
        for n, title in enumerate(titles)
    ]
    target, *others = items
    seen = draw(st.lists(st.sampled_from(others), max_size=8))
    history = [Interaction(i.item_id, draw(EVENT), n) for n, i in enumerate(seen)]
    shares = np.array(draw(st.lists(st.floats(-1, 1), min_size=len(seen), max_size=len(seen))))
    # Co-occurrence counts between any catalog items, and maybe a trend for the target.
    pair = st.tuples(st.sampled_from(items), st.sampled_from(items), st.integers(1, 50))
    bought: dict[str, dict[str, int]] = {}
    viewed: dict[str, dict[str, int]] = {}
    for table in (bought, viewed):
        for a, b, count in draw(st.lists(pair, max_size=12)):
            table.setdefault(a.item_id, {})[b.item_id] = count
    trend = draw(st.none() | st.builds(TrendingItem, st.just(target.item_id),
                                       st.floats(0, 1e6), st.integers(1, 100)))  # fmt: skip
    half_life = draw(st.sampled_from([60.0, 90.0, 3600.0, 5400.0, 86400.0, 7.5]))
    stats = ItemStats({} if trend is None else {target.item_id: trend}, half_life, bought, viewed)
    partners = SessionPartners(history, {i.item_id: i for i in items}.get, stats)
    reason = build_reason(
        target,
        cited=CitableHistory(history, seen).cite(shares, ReasonParams()),
        categories=category_counts(seen),
        history_length=len(seen),
        cold_start_item=draw(st.booleans()),
        popularity=draw(st.integers(0, 10_000)),
        params=ReasonParams(),
        tags=tag_counts(seen),
        bought_with=partners.bought(target.item_id),
        viewed_with=partners.viewed(target.item_id),
        trend=None if trend is None else trend_evidence(trend, half_life),
    )
    return items, reason


def shown_values(evidence) -> set[str]:
    if isinstance(evidence, dict):
        own = {v for k, v in evidence.items() if k in {"title", "category", "tag"} and v}
        return own.union(*(shown_values(v) for v in evidence.values()))
    if isinstance(evidence, list):
        return set().union(*(shown_values(v) for v in evidence))
    return set()


@settings(max_examples=300, deadline=None)
@given(shop=shop_reason(), language=st.sampled_from(["en", "zh"]))
def test_no_template_ever_names_a_title_or_category_absent_from_the_evidence(shop, language):
    items, reason = shop
    guard = Guard([i.title for i in items], {i.category for i in items})
    allowed = shown_values(dict(reason.evidence))
    absent = ({i.title for i in items} | {i.category for i in items}) - allowed
    tiers = TemplateGenerator(language).phrasings(reason.code, reason.evidence)
    for n, tier in enumerate(tiers):
        for sentence in tier:
            rest = sentence
            for value in sorted(allowed, key=len, reverse=True):
                rest = rest.replace(value, "\x00")
            assert not [name for name in absent if name in rest], sentence
            assert_faithful(
                guard, sentence, reason.evidence, reason.code, generic=n == len(tiers) - 1
            )


@pytest.mark.parametrize(
    "title", ["{count} of {category}", "《Odd》 “Quote”", "100% Wool", "  x  "]
)
def test_titles_are_inserted_verbatim_never_interpreted(title):
    evidence = {"items": [cite(title, "purchase")]}
    for generator in (EN, ZH):
        sentences = [s for tier in generator.phrasings("similar_to_recent", evidence) for s in tier]
        assert title in generator.canonical("similar_to_recent", evidence)
        assert all("{" not in s or "{count}" in title for s in sentences)


def test_long_titles_make_a_list_use_shorter_phrasings_within_the_guards_limit():
    # MovieLens titles like these made "Because you bought A and B, and <habit>" 178
    # characters long, over the guard's 160.
    long_a = "The Good, The Bad and The Ugly (1966)"
    long_b = "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)"
    guard = Guard([long_a, long_b], ["Sci-Fi"])
    evidence = {
        "items": [cite(long_a, "purchase", "a"), cite(long_b, "purchase", "b")],
        "also": {"code": "tag_affinity", "tag": "Sci-Fi", "count": 3, "of_recent": 27},
    }
    assert len(EN.canonical("similar_to_recent", evidence)) > 160
    texts = EN.render_list([("similar_to_recent", evidence)] * 10, [f"i{n}" for n in range(10)])
    assert len(set(texts)) == 10
    for text in texts:
        assert len(text) <= 160, text
        assert_faithful(guard, text, evidence, "similar_to_recent", generic=False)
    single = EN.render("similar_to_recent", evidence, item_id="x")
    assert len(single) <= 160
    assert long_a in single
    assert (
        len(
            TemplateGenerator("en", max_chars=1000).render_list([("similar_to_recent", evidence)])[
                0
            ]
        )
        > 160
    )
