"""Online item statistics: decayed popularity and co-occurrence, on known answers."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamrec.engine.serving.item_stats as item_stats
from streamrec.engine.serving.item_stats import (
    TREND_EPOCH_MS,
    CoPairs,
    ItemStats,
    ItemStatsCounter,
    TrendingItem,
    TrendParams,
    add_log,
    best_partner,
    cooccurrence_pairs,
    decayed_count,
    log_weight,
    session_items,
    trending,
    trending_in_log,
)
from streamrec.engine.types import Interaction

HOUR_MS = 3_600_000
T0 = 1_763_856_000_000  # 2025-11-23


def views(*items: str, kind: str = "view") -> list[Interaction]:
    return [Interaction(i, kind, n) for n, i in enumerate(items)]  # type: ignore[arg-type]


# -- decay --------------------------------------------------------------------------------


def test_a_count_halves_after_one_half_life_and_quarters_after_two():
    counter = ItemStatsCounter(TrendParams(half_life_s=3600))
    for _ in range(8):
        counter.add("x", "view", T0)
    assert counter.decayed("x", T0) == pytest.approx(8.0, rel=1e-9)
    assert counter.decayed("x", T0 + HOUR_MS) == pytest.approx(4.0, rel=1e-9)
    assert counter.decayed("x", T0 + 2 * HOUR_MS) == pytest.approx(2.0, rel=1e-9)
    assert counter.decayed("unknown", T0) == 0.0


def test_the_half_life_is_configurable():
    counter = ItemStatsCounter(TrendParams(half_life_s=60))
    counter.add("x", "view", T0)
    assert counter.decayed("x", T0 + 60_000) == pytest.approx(0.5, rel=1e-9)
    assert counter.decayed("x", T0 + 600_000) == pytest.approx(2**-10, rel=1e-9)


def test_events_at_different_times_add_up_with_their_own_decay():
    counter = ItemStatsCounter(TrendParams(half_life_s=3600))
    counter.add("x", "view", T0)
    counter.add("x", "click", T0 + HOUR_MS)
    # 1/2 (an hour old) + 1 (now)
    assert counter.decayed("x", T0 + HOUR_MS) == pytest.approx(1.5, rel=1e-9)


def test_scores_stay_finite_and_exact_decades_after_the_epoch_with_a_short_half_life():
    # A plain exp(lam * t) would overflow after ~1024 half-lives (17 minutes here).
    far = TREND_EPOCH_MS + 50 * 365 * 24 * HOUR_MS
    counter = ItemStatsCounter(TrendParams(half_life_s=1.0))
    for _ in range(1000):
        counter.add("x", "view", far)
    assert math.isfinite(counter.scores["x"])
    assert counter.decayed("x", far) == pytest.approx(1000.0, rel=1e-6)
    assert counter.decayed("x", far + 3000) == pytest.approx(125.0, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.integers(0, 48 * HOUR_MS), min_size=1, max_size=30),
    half_life=st.sampled_from([1.0, 60.0, 3600.0, 86400.0]),
)
def test_the_log_space_count_equals_the_plain_decayed_sum(ages, half_life):
    counter = ItemStatsCounter(TrendParams(half_life_s=half_life))
    for age in ages:
        counter.add("x", "view", T0 - age)
    expected = sum(2.0 ** (-(age / 1000) / half_life) for age in ages)
    # float64 scores of about lam * t: relative error ~1e-16 * score (1e-8 at 1 s in 2025)
    assert counter.decayed("x", T0) == pytest.approx(expected, rel=1e-7, abs=1e-300)


def test_add_log_is_a_stable_logaddexp():
    assert add_log(None, 2.0) == 2.0
    assert add_log(-math.inf, 2.0) == 2.0
    assert add_log(math.log(3), math.log(5)) == pytest.approx(math.log(8), rel=1e-15)
    assert add_log(1e6, 1e6) == pytest.approx(1e6 + math.log(2), rel=1e-15)
    assert add_log(1e6, 0.0) == 1e6  # the small one vanishes, nothing overflows


def test_log_weight_and_decayed_count_are_inverse_at_the_same_time():
    assert log_weight(TREND_EPOCH_MS, 3600.0) == 0.0
    assert decayed_count(log_weight(T0, 3600.0), T0, 3600.0) == pytest.approx(1.0)


def test_invalid_trend_parameters_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="half_life_s"):
        TrendParams(half_life_s=0)
    with pytest.raises(ValueError, match="top_n"):
        TrendParams(top_n=0)


# -- trending ---------------------------------------------------------------------------


def test_a_burst_of_recent_events_outranks_more_but_older_events():
    counter = ItemStatsCounter(TrendParams(half_life_s=3600, top_n=10, min_count=1.0))
    for _ in range(10):
        counter.add("old", "view", T0 - 5 * HOUR_MS)  # 10 / 32 now
    for _ in range(3):
        counter.add("new", "view", T0)
    ranked = counter.trending(T0)
    assert list(ranked) == ["new"]
    assert ranked["new"].rank == 1
    assert ranked["new"].count == pytest.approx(3.0)
    # the order does not depend on when it is read, only the counts do
    later = counter.trending(T0 + HOUR_MS)
    assert list(later) == ["new"]
    assert later["new"].count == pytest.approx(1.5)


def test_trending_is_the_top_n_above_the_minimum_count_in_order():
    scores = [(f"i{n}", log_weight(T0, 3600.0) + math.log(n)) for n in range(1, 8)]
    top = trending(scores, T0, TrendParams(top_n=3, min_count=0.0))
    assert [(t.item_id, t.rank, round(t.count)) for t in top.values()] == [
        ("i7", 1, 7),
        ("i6", 2, 6),
        ("i5", 3, 5),
    ]
    assert list(trending(scores, T0, TrendParams(top_n=10, min_count=5.5))) == ["i7", "i6"]
    assert trending([], T0, TrendParams()) == {}


def test_ties_are_ranked_by_item_id():
    scores = [("b", 1.0), ("a", 1.0)]
    top = trending(scores, TREND_EPOCH_MS, TrendParams(min_count=0.0))
    assert [(t.item_id, t.rank) for t in top.values()] == [("a", 1), ("b", 2)]


# -- co-occurrence ---------------------------------------------------------------------------


def test_a_view_pairs_with_each_distinct_item_of_the_last_k_interactions():
    history = views("a", "b", "c", "b", "d", "e", "f")
    pairs = cooccurrence_pairs("x", "view", history, window=5)
    assert pairs == CoPairs(viewed=("f", "e", "d", "b", "c"), bought=())
    assert cooccurrence_pairs("x", "view", history, window=0) == CoPairs()
    assert cooccurrence_pairs("x", "view", [], window=5) == CoPairs()


def test_an_item_never_pairs_with_itself():
    assert cooccurrence_pairs("a", "view", views("a", "b", "a")).viewed == ("b",)


def test_bought_together_needs_both_sides_bought_or_in_the_cart():
    history = [
        Interaction("tent", "purchase", 1),
        Interaction("map", "view", 2),
        Interaction("stove", "add_to_cart", 3),
    ]
    assert cooccurrence_pairs("mat", "purchase", history).bought == ("stove", "tent")
    assert cooccurrence_pairs("mat", "add_to_cart", history).bought == ("stove", "tent")
    assert cooccurrence_pairs("mat", "view", history).bought == ()
    assert cooccurrence_pairs("mat", "click", history).viewed == ("stove", "map", "tent")


def test_counts_are_symmetric_and_once_per_event():
    counter = ItemStatsCounter(window=5)
    history: list[Interaction] = []
    for n, (item, kind) in enumerate(
        [("tent", "purchase"), ("map", "view"), ("tent", "view"), ("stove", "purchase")]
    ):
        counter.add(item, kind, T0 + n, history)
        history.append(Interaction(item, kind, T0 + n))  # type: ignore[arg-type]
    assert counter.viewed["tent"] == {"map": 2, "stove": 1}
    assert counter.viewed["map"] == {"tent": 2, "stove": 1}
    # the tent's latest interaction in the window is a view, its purchase still counts once
    assert counter.bought == {"stove": {"tent": 1}, "tent": {"stove": 1}}


def test_session_items_are_the_distinct_recent_items_most_recent_first():
    assert session_items(views("a", "b", "c", "a"), window=3) == ["a", "c", "b"]
    assert session_items(views("a", "b"), window=0) == []


def test_the_best_partner_is_the_session_item_seen_most_often_with_the_candidate():
    table = {"tent": {"mat": 3}, "map": {"mat": 5}, "stove": {"mat": 5}}
    assert best_partner("mat", ["stove", "map", "tent"], table) == ("stove", 5)
    assert best_partner("mat", ["tent"], table, min_count=4) is None
    assert best_partner("mat", ["mat"], {"mat": {"mat": 9}}) is None
    assert best_partner("lamp", ["tent"], table) is None


def test_docstring_examples_hold():
    assert doctest.testmod(item_stats, optionflags=doctest.ELLIPSIS).failed == 0


def test_trending_over_a_log_is_what_the_online_counter_reports_after_it():
    half_hour = 1_800_000
    log = [("a", 0), ("b", 0), ("b", half_hour), ("a", 2 * half_hour), ("c", 2 * half_hour)]
    log += [("a", 3 * half_hour), ("b", 3 * half_hour), ("late", 9 * half_hour)]
    now = TREND_EPOCH_MS + 3 * half_hour
    params = TrendParams(half_life_s=3600.0, top_n=2, min_count=0.5)
    counter = ItemStatsCounter(params)
    for item, at in log:
        if at <= 3 * half_hour:  # the counter has seen what happened up to now
            counter.add(item, "view", TREND_EPOCH_MS + at)
    offline = trending_in_log(
        [i for i, _ in log], [TREND_EPOCH_MS + at for _, at in log], now, params
    )
    online = counter.trending(now)
    assert list(offline) == list(online) == ["a", "b"]
    for item in offline:
        assert offline[item].rank == online[item].rank
        assert math.isclose(offline[item].count, online[item].count, rel_tol=1e-12)
    assert trending_in_log([], [], now, params) == {}


def test_batch_statistics_list_trending_items_by_rank_whatever_their_order() -> None:
    stats = ItemStats(
        trending={
            "c": TrendingItem("c", 2.0, 3),
            "a": TrendingItem("a", 9.0, 1),
            "b": TrendingItem("b", 5.0, 2),
        }
    )
    assert stats.ranked_trending == ("a", "b", "c")
    assert ItemStats().ranked_trending == ()
