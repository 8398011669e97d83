"""Specification of the user embedding and scoring shared by evaluation and serving."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.scoring import (
    ScoringParams,
    normalised_log_popularity,
    score_items,
    score_items_batch,
)
from streamrec.engine.serving.user_embedding import (
    EventWeights,
    UserEmbeddingParams,
    contribution_rows,
    contributions,
    cosine_rows,
    explanation_rows,
    history_weights,
    user_embedding,
)


def test_event_weights_grow_with_intent() -> None:
    w = EventWeights()
    assert [w.of(t) for t in ("view", "click", "add_to_cart", "purchase")] == [1, 2, 3, 4]


def test_unknown_event_type_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match="'like'"):
        EventWeights().of("like")


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_decay_outside_unit_interval_is_rejected(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        UserEmbeddingParams(decay=decay)


def test_history_weights_are_type_weight_times_decay_per_position() -> None:
    params = UserEmbeddingParams(max_history=50, decay=0.5)
    w = history_weights(["purchase", "click", "view"], params)
    # oldest first: purchase is 2 positions back, the view is the most recent
    np.testing.assert_allclose(w, [4 * 0.25, 2 * 0.5, 1.0])


def test_events_beyond_max_history_weigh_nothing() -> None:
    params = UserEmbeddingParams(max_history=2, decay=1.0)
    w = history_weights(["purchase", "view", "view"], params)
    np.testing.assert_array_equal(w, [0.0, 1.0, 1.0])


def test_empty_history_gives_the_zero_vector() -> None:
    w = history_weights([], UserEmbeddingParams())
    u = user_embedding(np.zeros((0, 8), dtype=np.float32), w)
    assert u.shape == (8,)
    assert u.dtype == np.float32
    assert not u.any()


def test_user_vector_is_unit_norm_and_leans_to_recent_strong_events() -> None:
    a, b = np.eye(2, dtype=np.float32)
    params = UserEmbeddingParams(decay=0.5)
    u = user_embedding(np.stack([a, b]), history_weights(["view", "purchase"], params))
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-6)
    assert u[1] > u[0] > 0  # the recent purchase dominates the older view


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="weights must have shape"):
        user_embedding(np.zeros((3, 4)), np.ones(2))


def test_contributions_sum_to_the_candidates_cosine() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 16)).astype(np.float32)
    weights = history_weights(
        ["view", "click", "purchase", "view", "add_to_cart"], UserEmbeddingParams()
    )
    item = rng.standard_normal(16).astype(np.float32)
    parts = contributions(vectors, weights, item)
    assert parts.shape == (5,)
    assert parts.sum() == pytest.approx(float(user_embedding(vectors, weights) @ item), rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    vectors=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 6)),
        elements=st.floats(-10, 10, width=32),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_embedding_is_finite_and_contributions_add_up(
    vectors: np.ndarray, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0, 4, size=vectors.shape[0])
    item = rng.standard_normal(vectors.shape[1]).astype(np.float32)
    u = user_embedding(vectors, weights)
    assert np.all(np.isfinite(u))
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-5) or not u.any()
    parts = contributions(vectors, weights, item)
    assert parts.sum() == pytest.approx(float(u.astype(np.float64) @ item), abs=1e-4)


def test_contributions_are_zero_for_an_empty_user() -> None:
    parts = contributions(np.zeros((2, 3)), np.zeros(2), np.ones(3))
    np.testing.assert_array_equal(parts, [0.0, 0.0])
    np.testing.assert_array_equal(
        contribution_rows(np.zeros((2, 3)), np.zeros(2), np.ones((4, 3))), np.zeros((4, 2))
    )


def test_contribution_rows_are_each_candidates_contributions() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((7, 5)).astype(np.float32)
    weights = rng.uniform(0, 3, size=7)
    items = rng.standard_normal((4, 5)).astype(np.float32)
    rows = contribution_rows(vectors, weights, items)
    assert rows.shape == (4, 7)
    for j in range(4):
        np.testing.assert_allclose(rows[j], contributions(vectors, weights, items[j]), rtol=1e-12)
    with pytest.raises(ValueError, match=r"item vectors must have shape \(n, 5\)"):
        contribution_rows(vectors, weights, items[:, :3])


def test_cosine_rows_are_each_candidates_cosine_to_each_history_item() -> None:
    rng = np.random.default_rng(4)
    history = rng.standard_normal((6, 5))
    history[2] = 0.0  # an item without a vector is similar to nothing
    items = rng.standard_normal((3, 5))
    rows = cosine_rows(history, items)
    for j in range(3):
        for i in range(6):
            norms = np.linalg.norm(items[j]) * np.linalg.norm(history[i])
            expected = 0.0 if norms == 0 else items[j] @ history[i] / norms
            assert rows[j, i] == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"\(h, d\) and \(n, d\)"):
        cosine_rows(history, items[:, :3])


# --- scoring -------------------------------------------------------------------------------


def test_normalised_log_popularity_spans_zero_to_one() -> None:
    pop = normalised_log_popularity(np.array([0.0, 3.0, 99.0]))
    assert pop[0] == 0.0
    assert pop[2] == pytest.approx(1.0)
    assert 0 < pop[1] < 1
    assert not normalised_log_popularity(np.zeros(3)).any()


def test_score_is_cosine_plus_weighted_popularity() -> None:
    items = np.eye(3, dtype=np.float32)
    pop = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    user = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    np.testing.assert_allclose(
        score_items(user, items, pop, ScoringParams(0.0)), [0.6, 0.8, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        score_items(user, items, pop, ScoringParams(0.5)), [0.6, 1.05, 0.5], atol=1e-6
    )


def test_a_cold_user_gets_the_popularity_ranking() -> None:
    items = np.eye(3, dtype=np.float32)
    pop = np.array([0.2, 1.0, 0.5], dtype=np.float32)
    scores = score_items(np.zeros(3, dtype=np.float32), items, pop, ScoringParams(0.0))
    assert np.argsort(-scores).tolist() == [1, 2, 0]


def test_scoring_candidates_equals_slicing_the_full_ranking() -> None:
    # the worker scores only the index's candidates; that must match the offline full ranking
    rng = np.random.default_rng(1)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    pop = normalised_log_popularity(rng.integers(0, 100, 50).astype(np.float64))
    users = items[:4] + items[4:8]
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    params = ScoringParams(0.3)
    full = score_items_batch(users, items, pop, params)
    rows = np.array([3, 17, 42])
    for u in range(4):
        np.testing.assert_allclose(
            score_items(users[u], items[rows], pop[rows], params), full[u, rows], atol=1e-6
        )


# --- no training/serving skew ----------------------------------------------------------------


def _toy_model(decay: float = 0.5, max_history: int = 3) -> ItemModel:
    vectors = np.eye(4, dtype=np.float32)
    return ItemModel(
        version="test",
        item_ids=("a", "b", "c", "d"),
        vectors=vectors,
        popularity=np.array([1, 2, 3, 4], dtype=np.float32),
        user_params=UserEmbeddingParams(max_history=max_history, decay=decay),
        scoring=ScoringParams(0.0),
        content=None,
        item_categories=("", "", "", ""),
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def test_model_embeds_users_with_the_shared_functions() -> None:
    model = _toy_model()
    items, types = ["a", "b", "c"], ["view", "purchase", "click"]
    expected = user_embedding(model.vectors[[0, 1, 2]], history_weights(types, model.user_params))
    np.testing.assert_array_equal(model.embed_user(items, types), expected)


def test_unknown_items_are_skipped_but_still_age_the_history() -> None:
    model = _toy_model(decay=0.5, max_history=3)
    # "zzz" is unknown: "a" is still 2 positions old; "c" falls outside max_history
    u = model.embed_user(["c", "a", "zzz", "b"], ["view", "view", "view", "view"])
    expected = np.array([0.25, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(u, expected / np.linalg.norm(expected), rtol=1e-6)


def test_explain_names_the_history_items_behind_a_candidate() -> None:
    model = _toy_model(decay=1.0)
    reasons = model.explain(["a", "b", "a"], ["view", "view", "view"], "a")
    assert reasons[0][0] == "a"
    assert sum(v for _, v in reasons) == pytest.approx(
        float(model.embed_user(["a", "b", "a"], ["view"] * 3)[0])
    )


def test_explanations_are_the_contributions_and_cosines_from_one_product() -> None:
    rng = np.random.default_rng(11)
    history = rng.normal(size=(7, 5)).astype(np.float32)
    history[2] = 0.0  # a zero vector: cosine 0
    weights = rng.random(7)
    items = rng.normal(size=(4, 5)).astype(np.float32)
    parts, cosines = explanation_rows(history, weights, items)
    np.testing.assert_array_equal(parts, contribution_rows(history, weights, items))
    np.testing.assert_array_equal(cosines, cosine_rows(history, items))
    zero_user, _ = explanation_rows(history, np.zeros(7), items)
    assert not zero_user.any()
