"""Specification of the offline evaluation: splits, full-ranking metrics, baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from streamrec.engine.offline.evaluation import (
    PopularityRecommender,
    Recommender,
    Split,
    evaluate_full_ranking,
    format_markdown,
    leave_last_out,
    metrics_from_ranks,
    time_split,
)
from tests.eval_data import events_from

# --- splits ----------------------------------------------------------------------------------


def test_leave_last_out_holds_out_each_users_last_event_and_drops_single_event_users() -> None:
    events = events_from(
        [
            ("u1", "a", 30),
            ("u1", "b", 10),
            ("u1", "c", 20),
            ("u2", "a", 5),
            ("u3", "x", 1),
            ("u3", "y", 2),
        ]
    )
    split = leave_last_out(events)
    assert split.test[["user_id", "item_id"]].values.tolist() == [["u1", "a"], ["u3", "y"]]
    assert sorted(split.train["item_id"]) == ["b", "c", "x"]
    assert "u2" not in set(split.train["user_id"])  # fewer than 2 events


def test_leave_last_out_breaks_timestamp_ties_by_file_order() -> None:
    events = events_from([("u", "first", 7), ("u", "second", 7), ("u", "third", 7)])
    assert leave_last_out(events).test["item_id"].tolist() == ["third"]


def test_validation_holds_out_the_second_to_last_item() -> None:
    rows = [("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "a", 1), ("v", "d", 2)]
    events = events_from(rows)
    validation = leave_last_out(events).validation()
    assert validation.test["item_id"].tolist() == ["b"]  # v has 1 training event: dropped
    assert validation.train["item_id"].tolist() == ["a"]


def test_time_split_targets_each_users_first_event_after_the_cut() -> None:
    events = events_from(
        [
            ("u", "a", 1),
            ("v", "b", 2),
            ("u", "c", 3),
            ("u", "d", 4),
            ("v", "e", 5),
            ("w", "f", 6),
        ]
    )
    split = time_split(events, test_fraction=0.5)
    assert split.train["item_id"].tolist() == ["a", "b", "c"]
    # w has no training history (cold user): not evaluated
    assert split.test[["user_id", "item_id"]].values.tolist() == [["u", "d"], ["v", "e"]]
    assert split.validation().kind == "time"


def test_time_split_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        time_split(events_from([("u", "a", 1)]), test_fraction=1.0)


# --- metrics ---------------------------------------------------------------------------------

ITEMS = [f"i{k}" for k in range(30)]


def _split_with_targets(targets: Sequence[str], history: Sequence[str] = ()) -> Split:
    train_rows = [(f"u{n}", h, t) for n in range(len(targets)) for t, h in enumerate(history)]
    test_rows = [(f"u{n}", target, 100) for n, target in enumerate(targets)]
    return Split(train=events_from(train_rows), test=events_from(test_rows))


def _ranker(order: Sequence[str]) -> Recommender:
    """A recommender that gives every user the same ranking: ``order`` first, best first."""
    scores = np.zeros(len(ITEMS))
    for pos, item in enumerate(order):
        scores[ITEMS.index(item)] = len(order) - pos

    def recommend(histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(scores, (len(histories), 1))

    return recommend


@pytest.mark.parametrize("rank", [0, 1, 4, 9, 10, 19, 25])
def test_a_target_at_rank_r_scores_the_textbook_values(rank: int) -> None:
    order = [f"i{k}" for k in range(30)]
    split = _split_with_targets([order[rank]])
    result = evaluate_full_ranking(_ranker(order), split, ITEMS, ks=(10, 20))
    assert result["recall@10"].mean == float(rank < 10)
    assert result["ndcg@10"].mean == pytest.approx(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    assert result["ndcg@20"].mean == pytest.approx(1 / math.log2(rank + 2) if rank < 20 else 0.0)
    assert result["mrr@20"].mean == pytest.approx(1 / (rank + 1) if rank < 20 else 0.0)


def test_metrics_from_ranks_are_the_full_ranking_metrics_of_the_same_ranks() -> None:
    order = [f"i{k}" for k in range(30)]
    ranks = [0, 3, 9, 10, 19, 25]
    split = _split_with_targets([order[r] for r in ranks])
    full = evaluate_full_ranking(_ranker(order), split, ITEMS, ks=(10, 20))
    from_ranks = metrics_from_ranks(ranks, ks=(10, 20))
    assert list(from_ranks) == list(full.metrics)
    for name, estimate in full.metrics.items():
        assert from_ranks[name].mean == pytest.approx(estimate.mean)
        assert from_ranks[name].half_width == pytest.approx(estimate.half_width)


def test_metrics_from_ranks_refuses_bad_cut_offs_and_shapes() -> None:
    with pytest.raises(ValueError, match="ks must be positive"):
        metrics_from_ranks([0, 1], ks=(0,))
    with pytest.raises(ValueError, match=r"ranks must have shape \(u,\)"):
        metrics_from_ranks([[0, 1]])


def test_seen_items_are_removed_from_the_ranking() -> None:
    order = [f"i{k}" for k in range(30)]
    split = _split_with_targets(["i3"], history=["i0", "i1", "i2"])
    assert evaluate_full_ranking(_ranker(order), split, ITEMS)["mrr@20"].mean == 1.0
    kept = evaluate_full_ranking(_ranker(order), split, ITEMS, exclude_seen=False)
    assert kept["mrr@20"].mean == pytest.approx(1 / 4)


def test_a_target_already_seen_counts_as_a_miss() -> None:
    order = [f"i{k}" for k in range(30)]
    split = _split_with_targets(["i0"], history=["i0"])
    result = evaluate_full_ranking(_ranker(order), split, ITEMS)
    assert result["recall@20"].mean == 0.0
    assert result.n_seen_targets == 1


def test_ties_are_broken_by_item_order_like_a_stable_top_k() -> None:
    def flat(histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]) -> np.ndarray:
        return np.zeros((len(histories), len(ITEMS)))

    # every item ties: the target's rank is its position in item_ids
    result = evaluate_full_ranking(flat, _split_with_targets(["i12"]), ITEMS)
    assert result["mrr@20"].mean == pytest.approx(1 / 13)
    assert result["recall@10"].mean == 0.0


def test_confidence_interval_is_normal_approximation_over_users() -> None:
    order = [f"i{k}" for k in range(30)]
    targets = ["i0", "i0", "i25", "i25"]  # two hits, two misses
    result = evaluate_full_ranking(_ranker(order), _split_with_targets(targets), ITEMS)
    per_user = np.array([1.0, 1.0, 0.0, 0.0])
    assert result["recall@10"].mean == 0.5
    assert result["recall@10"].half_width == pytest.approx(1.96 * per_user.std(ddof=1) / 2)
    assert result.n_users == 4


def test_batching_does_not_change_the_result() -> None:
    rng = np.random.default_rng(0)
    targets = [ITEMS[i] for i in rng.integers(0, 30, 50)]
    split = _split_with_targets(targets, history=["i1", "i2"])
    table = rng.standard_normal((50, 30))
    calls: list[int] = []

    def recommend(histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]) -> np.ndarray:
        start = sum(calls)
        calls.append(len(histories))
        return table[start : start + len(histories)]

    small = evaluate_full_ranking(recommend, split, ITEMS, batch_size=7)
    assert max(calls) == 7
    calls.clear()
    large = evaluate_full_ranking(recommend, split, ITEMS, batch_size=512)
    assert small == large


def test_coverage_counts_items_in_anyones_top_k() -> None:
    order = [f"i{k}" for k in range(30)]
    result = evaluate_full_ranking(_ranker(order), _split_with_targets(["i0", "i5"]), ITEMS)
    assert result.coverage["coverage@10"] == pytest.approx(10 / 30)
    assert result.coverage["coverage@20"] == pytest.approx(20 / 30)


def test_evaluation_refuses_targets_outside_the_ranked_items() -> None:
    with pytest.raises(ValueError, match="item_ids must contain every test target"):
        evaluate_full_ranking(_ranker([]), _split_with_targets(["zzz"]), ITEMS)


def test_evaluation_refuses_wrong_shapes_and_nan() -> None:
    split = _split_with_targets(["i0"])
    with pytest.raises(ValueError, match="must return shape"):
        evaluate_full_ranking(lambda h, t: np.zeros((len(h), 3)), split, ITEMS)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_full_ranking(lambda h, t: np.full((len(h), 30), np.nan), split, ITEMS)


def test_popularity_ranks_by_training_counts() -> None:
    train = events_from([("u", "i2", 1), ("v", "i2", 2), ("v", "i7", 3)])
    pop = PopularityRecommender.fit(train, ITEMS)
    scores = pop([["x"], ["y"]], [["view"], ["view"]])
    assert scores.shape == (2, 30)
    assert np.argsort(-scores[0], kind="stable")[:2].tolist() == [2, 7]


def test_full_pipeline_on_a_split_with_the_popularity_baseline() -> None:
    rows = [(f"u{u}", f"i{(u + k) % 5}", k) for u in range(20) for k in range(4)]
    split = leave_last_out(events_from(rows))
    universe = split.item_ids()
    result = evaluate_full_ranking(
        PopularityRecommender.fit(split.train, universe), split, universe
    )
    assert result.n_users == 20
    assert 0.0 <= result["ndcg@10"].mean <= 1.0


def test_markdown_table_has_one_row_per_model_with_intervals() -> None:
    order = [f"i{k}" for k in range(30)]
    result = evaluate_full_ranking(_ranker(order), _split_with_targets(["i0", "i9"]), ITEMS)
    table = format_markdown({"model": result, "popularity": result})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model | recall@10 | ndcg@10")
    assert len(lines) == 4
    assert "±" in lines[2]


def test_a_session_split_tests_later_sessions_on_their_last_event_given_the_rest():
    import pandas as pd

    from streamrec.engine.offline.evaluation import session_split

    rows = []
    for s in range(10):  # session s: items a{s}, b{s}, c{s}, one second apart
        for n, item in enumerate(("a", "b", "c")[: 1 + s % 3]):
            rows.append(
                {"event_id": f"{s}{n}", "user_id": f"s{s}", "item_id": f"{item}{s}",
                 "type": "view", "ts": 1000 * s + n}
            )  # fmt: skip
    split = session_split(pd.DataFrame(rows), test_fraction=0.3)
    assert split.kind == "session"
    assert set(split.train["user_id"]) == {f"s{s}" for s in range(7)}
    # Sessions 7, 8, 9 are after the cut; 9 has one event and cannot be tested.
    assert split.test["user_id"].tolist() == ["s7", "s8"]
    assert split.test["item_id"].tolist() == ["b7", "c8"]
    assert split.context is not None
    assert sorted(split.context["item_id"]) == ["a7", "a8", "b8"]
    histories, _ = split.histories()
    assert histories == [["a7"], ["a8", "b8"]]  # the session's own earlier events
    assert "c8" in split.item_ids()
    validation = split.validation()  # the same protocol on the training sessions
    assert validation.kind == "session"
    assert set(validation.test["user_id"]) <= {f"s{s}" for s in range(7)}
