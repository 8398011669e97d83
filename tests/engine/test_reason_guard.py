"""The faithfulness guard rejects crafted hallucinations and accepts faithful sentences;
prompts carry the evidence and nothing else."""

from __future__ import annotations

import pytest

from streamrec.engine.reasons import Guard, build_prompt, check
from streamrec.engine.reasons.claims import CLAIMS, EVENT_CLAIMS

TITLES = ["Trail Runner 3", "Road Racer 2", "Ridge Jacket", "Star Wars (1977)", "Cast Pan"]
CATEGORIES = ["running", "outdoor", "kitchen", "New Releases"]
GUARD = Guard(TITLES, CATEGORIES)
USER = "u-4711"

SIMILAR = {
    "items": [
        {"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 0.41},
        {"item_id": "s2", "title": "Road Racer 2", "event": "purchase", "share": 0.33},
    ]
}
CATEGORY = {"category": "running", "count": 3, "of_recent": 5}
POPULAR = {"interactions": 1682, "user_history": 0}
NEW = {"category": "New Releases", "similar_items": []}


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        ("Because you viewed Trail Runner 3 and bought Road Racer 2", SIMILAR),
        ("You looked at Trail Runner 3, so this could be a good fit.", SIMILAR),
        ('Since you bought "Road Racer 2", here is a close match', SIMILAR),
        ("Because you watched 'Trail Runner 3'", SIMILAR),
        ("Trail Runner 3 explains 41% of this pick", SIMILAR),
        ("因为你浏览过《Trail Runner 3》，还购买过《Road Racer 2》", SIMILAR),
        ("Because 3 of your last 5 items were in running", CATEGORY),
        ("You keep coming back to Running: three of your last five picks", CATEGORY),
        ("你最近的5件商品中有三件属于「running」", CATEGORY),
        ("Popular with other users (1,682 interactions) while we learn your taste", POPULAR),
        ("很受其他用户欢迎（1682次互动）", POPULAR),
        ("New in New Releases", NEW),
        ("「New Releases」新品", NEW),
    ],
)
def test_faithful_sentences_pass(text, evidence):
    result = GUARD.check(text, evidence, user_id=USER)
    assert result.ok, result.violations
    assert result.violations == []


@pytest.mark.parametrize(
    ("text", "evidence", "kind"),
    [
        ("Because you viewed Trail Runner 3 and Ridge Jacket", SIMILAR, "title"),
        ("Because you viewed Trail Runner 3, great for the kitchen", SIMILAR, "category"),
        ("因为你浏览过《Ridge Jacket》", SIMILAR, "quote"),
        ('Because you viewed "Trail Runner 4"', SIMILAR, "quote"),
        ("Because 4 of your last 5 items were in running", CATEGORY, "number"),
        ("Because 3 of your last 12 items were in running", CATEGORY, "number"),
        ("Because seven of your last 5 items were in running", CATEGORY, "number"),
        ("你最近的5件商品中有四件属于「running」", CATEGORY, "number"),
        ("Trail Runner 3 explains 90% of this pick", SIMILAR, "number"),
        (f"Hi {USER}, because you viewed Trail Runner 3", SIMILAR, "user_id"),
        ("Because you viewed Trail Runner 3; questions: help@shop.example", SIMILAR, "email"),
        ("Because you viewed Trail Runner 3, call +1 415 555 0100", SIMILAR, "phone"),
        ("Because you viewed Trail Runner 3, see https://shop.example/x", SIMILAR, "url"),
        ("Because you viewed Trail Runner 3, see shop.com", SIMILAR, "url"),
        ("Trending now: because you viewed Trail Runner 3", SIMILAR, "claim"),
        ("A bestseller in running: 3 of your last 5 items were there", CATEGORY, "claim"),
        ("Brand new, like Trail Runner 3 which you viewed", SIMILAR, "claim"),
        ("Frequently bought together with Road Racer 2", SIMILAR, "claim"),
        ("Because you loved Trail Runner 3", SIMILAR, "claim"),
        ("因为你浏览过《Trail Runner 3》，这是热门商品", SIMILAR, "claim"),
        ("「running」新品：你最近的5件商品中有3件属于它", CATEGORY, "claim"),
        ("Popular with other users (1682 interactions), similar to your taste", POPULAR, "claim"),
        ("Because you bought Trail Runner 3", {"items": SIMILAR["items"][:1]}, "event"),
        ("因为你把《Trail Runner 3》加入过购物车", SIMILAR, "event"),
        ("Because you viewed Trail Runner 3 " + "and more " * 20, SIMILAR, "too_long"),
        ("   ", SIMILAR, "empty"),
    ],
)
def test_crafted_hallucinations_are_rejected(text, evidence, kind):
    result = GUARD.check(text, evidence, user_id=USER)
    assert not result.ok
    assert kind in result.kinds, result.violations


def test_a_sentence_that_states_no_fact_is_rejected_unless_allowed():
    text = "You're ready to begin. I'm ready to assist you."
    assert GUARD.check(text, SIMILAR).kinds == {"ungrounded", "uncited"}
    assert Guard(TITLES, CATEGORIES, require_grounding=False).check(text, SIMILAR).ok
    assert check("Another pick for you", CATEGORY, TITLES, CATEGORIES, require_grounding=False).ok
    # Wording of the reason's own code grounds it, as does any evidence value or number.
    assert GUARD.check("A popular pick", POPULAR).ok
    assert GUARD.check("Just arrived", NEW).ok
    assert GUARD.check("Three of your last five", CATEGORY).ok


BOUGHT_WITH = {"bought_with": {"item_id": "p1", "title": "Cast Pan", "event": "purchase"}}


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        ("Similar to this", SIMILAR),
        ("You viewed something just like it, so you may like this one", SIMILAR),
        ("Often bought together with what you bought", BOUGHT_WITH),
    ],
)
def test_a_reason_resting_on_items_must_name_one(text, evidence):
    """A sentence may be true to the letter and still tell the user nothing they can
    check: a similarity or together reason names at least one of its items."""
    result = GUARD.check(text, evidence)
    assert "uncited" in result.kinds, result.violations
    assert Guard(TITLES, CATEGORIES, require_grounding=False).check(text, evidence).ok


def test_naming_one_cited_item_is_enough_and_a_title_may_drop_its_year():
    assert GUARD.check("Similar to Road Racer 2, which you bought", SIMILAR).ok
    assert GUARD.check("Often bought together with Cast Pan", BOUGHT_WITH).ok
    star_wars = {"items": [{"item_id": "50", "title": "Star Wars (1977)", "event": "view"}]}
    assert GUARD.check("Because you viewed Star Wars", star_wars).ok
    # Other codes rest on facts, not items: nothing to name.
    assert GUARD.check("Three of your last five", CATEGORY).ok


def test_violations_name_what_is_wrong():
    result = GUARD.check(
        "Trending: 7 people viewed Ridge Jacket", SIMILAR, code="similar_to_recent"
    )
    assert "title: 'Ridge Jacket' is not in the evidence" in result.violations
    assert "number: 7 is not in the evidence" in result.violations
    assert any(v.startswith("claim: trending ('trending')") for v in result.violations)


def test_titles_and_categories_are_matched_as_words_and_masked_when_in_the_evidence():
    guard = Guard(["Run", "Heat (1995)"], ["new"])
    assert guard.check("Because you viewed Trail Runner 3", SIMILAR).ok  # "Run" in "Runner"
    assert "title" in guard.check("Because you viewed Trail Runner 3 and Run", SIMILAR).kinds
    assert guard.check("Because you viewed Trail Runner 3", SIMILAR).ok
    # A category named like a claim keyword is masked when it is the evidence.
    assert guard.check("More from new", {"category": "new", "count": 2, "of_recent": 3}).ok


def test_a_quoted_title_may_drop_its_year():
    evidence = {"items": [{"item_id": "50", "title": "Star Wars (1977)", "event": "view"}]}
    assert GUARD.check('Because you viewed "Star Wars"', evidence).ok
    assert not GUARD.check('Because you viewed "Star"', evidence).ok


def test_a_short_user_id_that_equals_an_evidence_number_is_not_a_leak():
    assert GUARD.check("Because 3 of your last 5 items were in running", CATEGORY, user_id="3").ok
    assert not GUARD.check("User 3x: running", CATEGORY, user_id="3x").ok


def test_a_user_id_inside_a_cited_title_is_not_a_leak():
    # MovieLens user "13" and the film "Apollo 13": the template sentence is truthful.
    guard = Guard(["Apollo 13", "Heat"], ["Drama"])
    evidence = {"items": [{"item_id": "28", "title": "Apollo 13", "event": "view", "share": 1.0}]}
    assert guard.check("Because you viewed Apollo 13", evidence, user_id="13").ok
    assert "user_id" in guard.check("User 13 viewed Apollo 13", evidence, user_id="13").kinds


def test_the_code_is_inferred_from_the_evidence_or_given():
    text = "Popular with other users (3 interactions)"
    assert GUARD.check(text, {"interactions": 3, "user_history": 2}).ok
    assert not GUARD.check(text, {"interactions": 3}, code="category_affinity").ok


def test_the_secondary_signal_backs_its_own_claims():
    evidence = {**SIMILAR, "also": {**CATEGORY, "code": "category_affinity"}}
    text = "Because you viewed Trail Runner 3, and 3 of your last 5 items were in running"
    assert GUARD.check(text, evidence).ok
    assert {"claim", "number", "category"} <= GUARD.check(text, SIMILAR).kinds


def test_the_one_off_check_matches_the_guard():
    text = "Because you viewed Trail Runner 3 and Ridge Jacket"
    result = check(text, SIMILAR, TITLES, CATEGORIES, max_chars=30)
    assert result.kinds == {"title", "too_long"}


def test_catalog_updates_extend_the_vocabulary():
    guard = Guard(TITLES, CATEGORIES)
    text = "Because you viewed Trail Runner 3 and Summit Tent 2"
    assert "title" not in guard.check(text, SIMILAR).kinds
    guard.update(titles=["Summit Tent 2"])
    assert "title" in guard.check(text, SIMILAR).kinds


def test_every_claim_has_english_and_chinese_keywords():
    for claim in CLAIMS:
        assert claim.keywords["en"], claim.name
        assert claim.keywords["zh"], claim.name
    for event, words in EVENT_CLAIMS.items():
        assert words["en"], event
        assert words["zh"], event


# -- prompts -----------------------------------------------------------------------------


def test_the_prompt_holds_the_facts_of_the_evidence_and_nothing_else():
    prompt = build_prompt("similar_to_recent", SIMILAR, "en")
    assert '"Trail Runner 3"' in prompt.user
    assert 'bought "Road Racer 2"' in prompt.user
    assert "s1" not in prompt.user
    assert "0.41" not in prompt.user
    assert "English" in prompt.system
    assert "160 characters" in prompt.system
    assert prompt.messages()[0]["role"] == "system"
    assert prompt.messages()[1]["content"] == prompt.user


def test_a_chinese_prompt_asks_for_chinese_and_shows_a_chinese_example():
    prompt = build_prompt("category_affinity", CATEGORY, "zh", max_chars=80)
    assert "Simplified Chinese" in prompt.system
    assert "80 characters" in prompt.system
    assert "因为你最近的5件商品中有3件属于「running」" in prompt.user
    assert '3 of your last 5 items were in the category "running"' in prompt.user


def test_prompts_of_other_codes_state_their_facts():
    assert "1682 times" in build_prompt("popular", POPULAR).user
    assert "do not know your taste" in build_prompt("popular", POPULAR).user
    assert 'new in the category "New Releases"' in build_prompt("new_arrival", NEW).user
    tag = {"tag": "trail", "count": 2, "of_recent": 4}
    assert 'had the tag "trail"' in build_prompt("tag_affinity", tag).user


@pytest.mark.parametrize("event", ["view", "click", "add_to_cart", "purchase", "rate"])
@pytest.mark.parametrize("code", ["similar_to_recent", "new_arrival"])
def test_a_model_that_copies_a_fact_of_its_prompt_is_not_rejected_for_it(code, event):
    # SmolLM2 mostly copies the facts' wording; "The shopper recently added to their cart"
    # used to be read as a newness claim ("recently added") and rejected.
    cited = [{"item_id": "s1", "title": "Trail Runner 3", "event": event, "share": 0.5}]
    key = "items" if code == "similar_to_recent" else "similar_items"
    habit = {"code": "category_affinity", **CATEGORY}
    evidence = {key: cited, "also": habit} if key == "items" else {key: cited, "category": "x"}
    for line in build_prompt(code, evidence).user.splitlines():
        if line.startswith("- "):
            result = GUARD.check(line[2:], evidence, code=code, user_id=USER)
            # A fact alone may state too little (no fact, or no cited item's name), never
            # something false.
            assert not result.kinds - {"ungrounded", "uncited"}, (line, result.violations)
            if "Trail Runner 3" in line:
                assert result.ok, (line, result.violations)
