"""Specification of the list metrics and of the top lists that evaluation keeps for them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline.evaluation import Split, evaluate_full_ranking
from streamrec.engine.offline.list_metrics import intra_list_diversity, ndcg_per_user, novelty


def test_identical_items_have_no_diversity_and_orthogonal_ones_full() -> None:
    same = np.array([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    assert intra_list_diversity(np.array([[0, 1, 2]]), same) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 1]]), np.eye(2)) == pytest.approx(1.0)


def test_diversity_is_the_mean_pairwise_cosine_distance_averaged_over_users() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # pairs of list 0: (0,1) 1 - 0, (0,2) 1 - 1/√2, (1,2) 1 - 1/√2; list 1: (0,2) 1 - 1/√2
    user0 = (1.0 + 2 * (1 - 1 / math.sqrt(2))) / 3
    user1 = 1 - 1 / math.sqrt(2)
    lists = np.array([[0, 1, 2], [2, 0, -1]])
    assert intra_list_diversity(lists, vectors) == pytest.approx((user0 + user1) / 2)


def test_items_without_a_vector_and_short_lists_are_left_out() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert intra_list_diversity(np.array([[0, 1, 2], [0, 2, -1]]), vectors) == pytest.approx(1.0)
    assert math.isnan(intra_list_diversity(np.array([[0, -1]]), vectors))


def test_novelty_is_the_mean_self_information_of_smoothed_popularity() -> None:
    counts = np.array([6.0, 2.0, 0.0])  # shares (c + 1) / (8 + 3): 7/11, 3/11, 1/11
    lists = np.array([[0, 1], [2, -1]])
    expected = (-(math.log2(7 / 11) + math.log2(3 / 11)) / 2 - math.log2(1 / 11)) / 2
    assert novelty(lists, counts) == pytest.approx(expected)
    assert novelty(np.array([[0]]), counts) < novelty(np.array([[2]]), counts)


def test_list_metrics_refuse_columns_out_of_range() -> None:
    with pytest.raises(ValueError, match="top_items"):
        novelty(np.array([[3]]), np.ones(3))
    with pytest.raises(ValueError, match="top_items"):
        intra_list_diversity(np.array([0, 1]), np.eye(2))


def _split(histories: Sequence[Sequence[str]], targets: Sequence[str]) -> Split:
    def frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "event_id": [f"e{i}" for i in range(len(rows))],
                "user_id": [r[0] for r in rows],
                "item_id": [r[1] for r in rows],
                "type": "view",
                "ts": np.arange(len(rows), dtype=np.int64),
            }
        )

    train = [(f"u{u}", item) for u, h in enumerate(histories) for item in h]
    return Split(train=frame(train), test=frame([(f"u{u}", t) for u, t in enumerate(targets)]))


def test_evaluation_keeps_each_users_top_list_best_first_without_seen_items() -> None:
    items = ["a", "b", "c", "d", "e"]
    scores = np.array([5.0, 4.0, 3.0, 3.0, -np.inf])  # c and d tie: c first (column order)

    def recommend(h: Sequence[Sequence[str]], t: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(scores, (len(h), 1))

    result = evaluate_full_ranking(recommend, _split([["a"], []], ["c", "b"]), items, keep_top=4)
    assert result.top_items is not None
    assert result.top_items.tolist() == [[1, 2, 3, -1], [0, 1, 2, 3]]
    plain = evaluate_full_ranking(recommend, _split([["a"], []], ["c", "b"]), items)
    assert plain.top_items is None
    assert plain == result  # the lists are extra information, not part of the metrics


def test_per_user_ndcg_from_the_kept_lists_matches_the_evaluation() -> None:
    rng = np.random.default_rng(3)
    items = [f"i{k}" for k in range(40)]
    table = rng.standard_normal((25, 40))
    table[:, 5] = table[:, 6]  # a tie, broken by column order in both

    def recommend(h: Sequence[Sequence[str]], t: Sequence[Sequence[str]]) -> np.ndarray:
        return table[: len(h)]

    targets = rng.integers(0, 40, 25)
    split = _split([["i1"]] * 25, [items[t] for t in targets])
    result = evaluate_full_ranking(recommend, split, items, keep_top=10)
    assert result.top_items is not None
    gains = ndcg_per_user(result.top_items, targets)
    assert gains.mean() == pytest.approx(result["ndcg@10"].mean)
    assert ndcg_per_user(np.array([[3, 1, -1]]), np.array([1])).tolist() == [1 / math.log2(3)]
