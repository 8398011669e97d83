"""MMR re-ranking: opt-in variety that never invents or drops candidates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamrec.engine.serving.diversity import mmr_order

# Two near-identical running shoes score highest, a jacket a little lower, a mixed item
# far lower.
SCORES = np.array([1.0, 0.99, 0.9, 0.0])
VECTORS = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)


def test_weight_zero_is_exactly_the_score_order() -> None:
    assert mmr_order(SCORES, VECTORS, k=4, weight=0.0) == [0, 1, 2, 3]


def test_a_diversity_weight_lifts_the_different_item_above_the_near_twin() -> None:
    assert mmr_order(SCORES, VECTORS, k=2, weight=0.3) == [0, 2]


def test_full_weight_still_starts_with_the_best_item() -> None:
    assert mmr_order(SCORES, VECTORS, k=3, weight=1.0)[0] == 0


def test_bad_weights_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        mmr_order(SCORES, VECTORS, k=2, weight=1.5)
    with pytest.raises(ValueError, match="expected"):
        mmr_order(SCORES, VECTORS[:2], k=2, weight=0.5)


@given(
    scores=arrays(np.float64, st.integers(1, 12), elements=st.floats(-5, 5)),
    weight=st.floats(0, 1),
    k=st.integers(0, 15),
    seed=st.integers(0, 1000),
)
def test_mmr_picks_distinct_candidates_and_never_more_than_asked(
    scores: np.ndarray, weight: float, k: int, seed: int
) -> None:
    vectors = np.random.default_rng(seed).normal(size=(scores.size, 3))
    order = mmr_order(scores, vectors, k=k, weight=weight)
    assert len(order) == min(k, scores.size)
    assert len(set(order)) == len(order)
    assert all(0 <= i < scores.size for i in order)
