"""Reasons backed by online item statistics: bought/viewed together and trending."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamrec.engine.reasons import (
    Guard,
    ReasonParams,
    SessionPartners,
    TemplateGenerator,
    build_prompt,
    build_reason,
    trend_evidence,
)
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.item_stats import ItemStats, TrendingItem
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries
from streamrec.engine.types import Interaction, Item, UserState
from streamrec.index.exact import ExactIndex
from tests import shop

TENT = Item("tent", "Summit Tent 2", "camping")
MAT = Item("mat", "Cloud Sleeping Mat", "camping")
LAMP = Item("lamp", "Glow Lamp", "camping")
PAN = Item("pan", "Cast Pan", "kitchen")
CATALOG = {i.item_id: i for i in (TENT, MAT, LAMP, PAN)}
GUARD = Guard([i.title for i in CATALOG.values()], {i.category for i in CATALOG.values()})
EN, ZH = TemplateGenerator("en"), TemplateGenerator("zh")


def reason_for(
    item: Item,
    history: list[Interaction],
    stats: ItemStats,
    *,
    cited: list[dict[str, object]] | None = None,
    categories: dict[str, int] | None = None,
):
    partners = SessionPartners(history, CATALOG.get, stats)
    trend = stats.trending.get(item.item_id)
    return build_reason(
        item,
        cited=cited or [],
        categories=Counter(categories or {}),
        history_length=len(history),
        cold_start_item=False,
        popularity=7,
        params=ReasonParams(),
        bought_with=partners.bought(item.item_id),
        viewed_with=partners.viewed(item.item_id),
        trend=None if trend is None else trend_evidence(trend, stats.half_life_s),
    )


def test_an_item_bought_with_a_session_item_is_said_to_be_bought_together_with_it():
    history = [Interaction("tent", "add_to_cart", 1)]
    stats = ItemStats(bought_together={"tent": {"mat": 6}})
    reason = reason_for(MAT, history, stats)
    assert reason.code == "bought_together"
    assert reason.evidence == {
        "bought_with": {"item_id": "tent", "title": "Summit Tent 2", "event": "add_to_cart"},
        "count": 6,
    }
    # The count holds add-to-carts too, so the sentence never says "bought" alone.
    assert reason.text == (
        "Often bought or added to cart together with Summit Tent 2, which you added to "
        "your cart (6 times)"
    )
    assert ZH.canonical(reason.code, reason.evidence) == (
        "经常与你加入过购物车的《Summit Tent 2》一起购买或加购（6次）"
    )
    assert GUARD.check(reason.text, reason.evidence).ok


def test_the_strongest_partner_of_the_session_is_cited():
    history = [Interaction("tent", "view", 1), Interaction("lamp", "purchase", 2)]
    stats = ItemStats(bought_together={"tent": {"mat": 9}, "lamp": {"mat": 3}})
    assert reason_for(MAT, history, stats).evidence["bought_with"]["item_id"] == "tent"


def test_rare_co_occurrences_and_items_outside_the_session_are_not_cited():
    stats = ItemStats(bought_together={"tent": {"mat": 1}, "pan": {"mat": 50}})
    history = [Interaction("tent", "view", 1)]
    assert reason_for(MAT, history, stats).code == "popular"  # 1 < min_together_count
    old = [Interaction("pan", "view", 0)] + [Interaction("lamp", "view", n) for n in range(1, 6)]
    assert reason_for(MAT, old, stats).code == "popular"  # the pan left the session window


def test_similarity_beats_bought_together_which_beats_a_category_habit():
    history = [Interaction("tent", "view", 1), Interaction("lamp", "view", 2)]
    stats = ItemStats(
        bought_together={"tent": {"mat": 4}},
        viewed_together={"tent": {"mat": 8}},
        trending={"mat": TrendingItem("mat", 30.0, 1)},
    )
    cited = [{"item_id": "tent", "title": "Summit Tent 2", "event": "view", "share": 0.9}]
    camping = {"camping": 2}
    assert reason_for(MAT, history, stats, cited=cited).code == "similar_to_recent"
    assert reason_for(MAT, history, stats, categories=camping).code == "bought_together"
    only_viewed = ItemStats(viewed_together={"tent": {"mat": 8}}, trending=stats.trending)
    assert reason_for(MAT, history, only_viewed, categories=camping).code == "category_affinity"
    assert reason_for(MAT, history, only_viewed).code == "viewed_together"
    assert reason_for(MAT, history, ItemStats(trending=stats.trending)).code == "trending"


def test_trending_beats_the_popular_fallback_for_new_users_too():
    stats = ItemStats(trending={"pan": TrendingItem("pan", 12.4, 2)}, half_life_s=3600.0)
    reason = reason_for(PAN, [], stats)
    assert reason.code == "trending"
    assert reason.evidence == {
        "count": 12,
        "rank": 2,
        "half_life": {"value": 1, "unit": "hour"},
    }
    assert reason.text == (
        "Trending: number 2 right now, with 12 recent interactions (half-life 1 hour)"
    )
    assert ZH.canonical("trending", reason.evidence) == (
        "近期热门第2名：最近12次互动（半衰期1小时）"
    )
    assert reason_for(LAMP, [], stats).code == "popular"


@pytest.mark.parametrize(
    ("half_life_s", "said"),
    [(60.0, "1 minute"), (5400.0, "90 minutes"), (172800.0, "2 days"), (7.5, "7.5 seconds")],
)
def test_the_half_life_is_said_in_its_natural_unit(half_life_s, said):
    evidence = trend_evidence(TrendingItem("x", 5.0, 1), half_life_s)
    assert said in EN.canonical("trending", evidence)
    assert GUARD.check(EN.canonical("trending", evidence), evidence).ok


# -- the guard ----------------------------------------------------------------------------

BOUGHT = {
    "bought_with": {"item_id": "tent", "title": "Summit Tent 2", "event": "view"},
    "count": 6,
}
VIEWED = {
    "viewed_with": {"item_id": "tent", "title": "Summit Tent 2", "event": "view"},
    "count": 11,
}
TREND = {"count": 12, "rank": 2, "half_life": {"value": 1, "unit": "hour"}}
SIMILAR = {"items": [{"item_id": "tent", "title": "Summit Tent 2", "event": "view"}]}
POPULAR = {"interactions": 40, "user_history": 3}


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        ("Frequently bought with Summit Tent 2", BOUGHT),
        ("Shoppers who bought Summit Tent 2 also bought this (6 times)", BOUGHT),
        ("Bought together with Summit Tent 2, which you viewed", BOUGHT),
        ("购买《Summit Tent 2》的顾客也买了这件（6次）", BOUGHT),
        ("People who viewed Summit Tent 2 also viewed this, 11 times", VIEWED),
        ("经常与《Summit Tent 2》一起浏览（11次）", VIEWED),
        ("Trending right now: 12 recent interactions", TREND),
        ("A popular pick right now, number 2 in trending", TREND),
        ("近期热门第2名", TREND),
    ],
)
def test_claims_backed_by_the_new_evidence_pass(text, evidence):
    result = GUARD.check(text, evidence)
    assert result.ok, result.violations


@pytest.mark.parametrize(
    ("text", "evidence", "kind"),
    [
        ("Frequently bought with Summit Tent 2", SIMILAR, "claim"),
        ("Frequently bought with Summit Tent 2", VIEWED, "claim"),
        ("Often viewed together with Summit Tent 2", BOUGHT, "claim"),
        ("Frequently bought with Glow Lamp", BOUGHT, "title"),
        ("Bought together with Summit Tent 2 7 times", BOUGHT, "number"),
        ("Bought together with Summit Tent 2, which you bought", BOUGHT, "event"),
        ("Trending right now: 40 interactions", POPULAR, "claim"),
        ("Trending right now: 13 recent interactions", TREND, "number"),
        ("Trending, and often bought together with Summit Tent 2", TREND, "claim"),
        ("近期热门，经常与《Summit Tent 2》一起购买", TREND, "quote"),
        ("与《Summit Tent 2》一起购买过6次", VIEWED, "claim"),
    ],
)
def test_claims_without_their_evidence_are_rejected(text, evidence, kind):
    result = GUARD.check(text, evidence)
    assert kind in result.kinds, result.violations


@pytest.mark.parametrize("code", ["bought_together", "viewed_together", "trending"])
def test_prompts_state_the_new_facts(code):
    evidence = {"bought_together": BOUGHT, "viewed_together": VIEWED, "trending": TREND}[code]
    prompt = build_prompt(code, evidence)
    assert "Summit Tent 2" in prompt.user or "trending" in prompt.user
    for line in prompt.user.splitlines():
        if line.startswith("- "):
            result = GUARD.check(line[2:], evidence, code=code)
            assert not result.kinds - {"ungrounded"}, (line, result.violations)


# -- the recommender passes the statistics through ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> shop.TrainedShop:
    return shop.train(tmp_path_factory.mktemp("model"))


def build(trained: shop.TrainedShop, params: RankingParams) -> Recommender:
    ids, vectors = index_entries(trained.model)
    index = ExactIndex(vectors.shape[1])
    index.upsert(ids, vectors)
    rec = Recommender(trained.model, index, Catalog(), params)
    for item in catalog_items(shop.catalog()):
        rec.apply_item(item)
    return rec


def test_the_recommender_gives_stats_reasons_only_when_given_stats(trained, tmp_path: Path):
    # No item explains enough of a score to be cited, so co-occurrence can speak.
    params = RankingParams(k=10, reasons=ReasonParams(min_share=1.01))
    rec = build(trained, params)
    user = UserState("u", (Interaction("running-1", "purchase", 1),))
    plain = rec.recommend([user], ["e"], 5000)[0].recommendation
    assert not {i.reason_code for i in plain.items} & {"bought_together", "trending"}
    target, hot = plain.items[0].item_id, plain.items[-1].item_id
    stats = ItemStats(
        trending={hot: TrendingItem(hot, 25.0, 1)},
        bought_together={"running-1": {target: 5}},
    )
    ranked = rec.recommend([user], ["e"], 5000, stats=stats)[0].recommendation
    assert [i.item_id for i in ranked.items] == [i.item_id for i in plain.items]  # same ranking
    by_id = {i.item_id: i for i in ranked.items}
    assert by_id[target].reason_code == "bought_together"
    assert by_id[target].evidence["bought_with"]["item_id"] == "running-1"
    assert rec.catalog.get("running-1").title in by_id[target].reason
    assert by_id[hot].reason_code in {"trending", "category_affinity", "tag_affinity"}
    new_user = rec.recommend([UserState("n", ())], ["e"], 5000)[0].recommendation
    popular = new_user.items[0].item_id
    stats = ItemStats(trending={popular: TrendingItem(popular, 25.0, 1)})
    fresh = rec.recommend([UserState("n", ())], ["e"], 5000, stats=stats)[0].recommendation
    assert fresh.items[0].reason_code == "trending"
    assert "25 recent interactions" in fresh.items[0].reason
    assert {i.reason_code for i in fresh.items[1:]} == {"popular"}
