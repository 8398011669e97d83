"""Specification of the baselines: each recovers known structure, EASE matches its closed form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline.als import ALSRecommender
from streamrec.engine.offline.baselines import (
    EASERecommender,
    ItemKNNRecommender,
    RecentPopularityRecommender,
    item_cosine_top_k,
    user_item_matrix,
)
from streamrec.engine.offline.evaluation import (
    PopularityRecommender,
    Recommender,
    evaluate_full_ranking,
    leave_last_out,
)
from streamrec.engine.serving.user_embedding import EventWeights
from tests.eval_data import events_from

DAY_MS = 86_400_000


def _two_clusters(users: int = 60, per_user: int = 6, seed: int = 0) -> pd.DataFrame:
    """Users 0, 2, 4... use only x0..x9; users 1, 3, 5... only y0..y9."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        prefix = "x" if u % 2 == 0 else "y"
        for t, k in enumerate(rng.choice(10, size=per_user, replace=False)):
            rows.append((f"u{u}", f"{prefix}{k}", u * 100 + t))
    return events_from(rows)


def _pairs(n_pairs: int = 8, users: int = 80, seed: int = 0) -> pd.DataFrame:
    """Items come in pairs: whoever takes a{k} takes b{k} right after it ("B follows A")."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t, k in enumerate(rng.choice(n_pairs, size=3, replace=False)):
            rows += [(f"u{u}", f"a{k}", u * 100 + 2 * t), (f"u{u}", f"b{k}", u * 100 + 2 * t + 1)]
    return events_from(rows)


CLUSTER_ITEMS = [f"x{k}" for k in range(10)] + [f"y{k}" for k in range(10)]
PAIR_ITEMS = [f"{p}{k}" for p in "ab" for k in range(8)]


def _fitted(name: str, events: pd.DataFrame, items: list[str]) -> Recommender:
    if name == "item-knn":
        return ItemKNNRecommender.fit(events, items, k=5)
    if name == "ease":
        return EASERecommender.fit(events, items, lam=1.0)
    return ALSRecommender.fit(events, items, factors=32, regularization=1.0, iterations=20, seed=3)


MODELS = ["item-knn", "ease", "als"]


@pytest.mark.parametrize("name", MODELS)
def test_a_users_top_5_comes_from_their_own_cluster(name: str) -> None:
    recommend = _fitted(name, _two_clusters(), CLUSTER_ITEMS)
    scores = recommend([["x1", "x2", "x3"], ["y7", "y8"]], [["view"] * 3, ["view"] * 2])
    seen = [{1, 2, 3}, {17, 18}]
    for row, own, history in zip(scores, ("x", "y"), seen, strict=True):
        ranked = [c for c in np.argsort(-row, kind="stable") if c not in history][:5]
        # a random ranking would put ~half of them in the other cluster
        assert [CLUSTER_ITEMS[c][0] for c in ranked] == [own] * 5


@pytest.mark.parametrize("name", MODELS)
def test_b_is_the_top_recommendation_after_a(name: str) -> None:
    recommend = _fitted(name, _pairs(), PAIR_ITEMS)
    histories = [[f"a{k}"] for k in range(8)]
    scores = recommend(histories, [["view"]] * 8)
    scores[np.arange(8), np.arange(8)] = -np.inf  # the history item itself
    assert [PAIR_ITEMS[c] for c in scores.argmax(axis=1)] == [f"b{k}" for k in range(8)]


@pytest.mark.parametrize("name", MODELS)
def test_on_a_leave_last_out_split_each_beats_popularity_by_far(name: str) -> None:
    items = [f"{p}{k}" for p in "ab" for k in range(20)]
    split = leave_last_out(_pairs(n_pairs=20, users=200, seed=1))
    result = evaluate_full_ranking(_fitted(name, split.train, items), split, items, ks=(1, 10))
    popular = evaluate_full_ranking(
        PopularityRecommender.fit(split.train, items), split, items, ks=(1, 10)
    )
    # the held-out item is the b of the user's last a: one guess is enough
    assert result["recall@1"].mean > 0.9
    assert popular["recall@1"].mean < 0.2
    assert result.n_items == len(items)


def test_ease_matches_the_hand_computed_closed_form() -> None:
    # X = [[1, 1], [1, 0]]: G + I = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5,
    # B[i, j] = -P[i, j] / P[j, j]: B[0, 1] = (1/5) / (3/5) = 1/3, B[1, 0] = (1/5) / (2/5) = 1/2
    events = events_from([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)])
    ease = EASERecommender.fit(events, ["a", "b"], lam=1.0)
    np.testing.assert_allclose(ease.b, [[0.0, 1 / 3], [1 / 2, 0.0]])
    np.testing.assert_allclose(ease([["a"]], [["view"]]), [[0.0, 1 / 3]])


def test_ease_refuses_a_catalog_too_large_to_invert() -> None:
    with pytest.raises(ValueError, match="max_items"):
        EASERecommender.fit(events_from([("u", "a", 1)]), ["a", "b", "c"], lam=1.0, max_items=2)


INDEX = {"a": 0, "b": 1, "c": 2}


def test_item_knn_keeps_the_k_most_similar_items_by_cosine() -> None:
    # a: users 1, 2; b: users 1, 2; c: users 2, 3 -> cos(a, b) = 1, cos(a, c) = cos(b, c) = 1/2
    rows = [("1", "a", 1), ("2", "a", 2), ("1", "b", 3), ("2", "b", 4), ("2", "c", 5)]
    events = events_from([*rows, ("3", "c", 6)])
    histories = [["a", "b"], ["a", "b", "c"], ["c"]]
    x = user_item_matrix(histories, [["view"] * len(h) for h in histories], INDEX, None)
    np.testing.assert_allclose(
        item_cosine_top_k(x, 2).toarray(), [[0, 1, 0.5], [1, 0, 0.5], [0.5, 0.5, 0]]
    )
    nearest = ItemKNNRecommender.fit(events, ["a", "b", "c", "never"], k=1)
    np.testing.assert_allclose(nearest([["a"]], [["view"]]), [[0.0, 1.0, 0.0, -np.inf]])
    knn = ItemKNNRecommender.fit(events, ["a", "b", "c", "never"], k=2)
    np.testing.assert_allclose(knn([["a", "c"]], [["view"] * 2])[0, :3], [0.5, 1.5, 0.5])


def test_the_matrix_keeps_the_strongest_event_or_a_one() -> None:
    index = {"a": 0, "b": 1}
    x = user_item_matrix(
        [["a", "a", "b", "zzz"]], [["view", "purchase", "click", "view"]], index, EventWeights()
    )
    assert x.toarray().tolist() == [[4.0, 2.0]]  # unknown items are dropped
    binary = user_item_matrix([["a", "a"]], [["view", "purchase"]], index, None)
    assert binary.toarray().tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="event type"):
        user_item_matrix([["a"]], [["like"]], index, EventWeights())


def test_recent_popularity_counts_the_last_week_of_training_and_breaks_ties_by_all_time() -> None:
    end = 100 * DAY_MS
    rows = [(f"u{i}", "old-hit", end - 30 * DAY_MS + i) for i in range(5)]
    rows += [(f"v{i}", "trending", end - 2 * DAY_MS + i) for i in range(2)]
    rows += [("w", "quiet", end - 20 * DAY_MS), ("w", "fresh", end)]
    items = ["quiet", "fresh", "old-hit", "trending"]
    pop = RecentPopularityRecommender.fit(events_from(rows), items)
    scores = pop([["x"]], [["view"]])[0]
    order = [pop.item_ids[c] for c in np.argsort(-scores, kind="stable")]
    assert order == ["trending", "fresh", "old-hit", "quiet"]


def test_items_without_training_events_are_never_recommended() -> None:
    items = [*CLUSTER_ITEMS, "catalog-only"]
    for name in MODELS:
        scores = _fitted(name, _two_clusters(), items)([["x1"]], [["view"]])
        assert scores[0, -1] == -np.inf, name
        assert np.isfinite(scores[0, :-1]).all(), name


def test_als_is_deterministic_for_a_seed() -> None:
    events = _two_clusters()

    def scores(seed: int) -> np.ndarray:
        als = ALSRecommender.fit(events, CLUSTER_ITEMS, factors=8, iterations=5, seed=seed)
        return als([["x1", "x2"]], [["view", "click"]])

    np.testing.assert_array_equal(scores(7), scores(7))
    assert not np.array_equal(scores(7), scores(8))
