"""The learned second stage: features, training, persistence, and the same order online."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.catalog import Catalog
from engine.hybrid_training import _version_of
from engine.item_stats import ItemStatsCounter
from engine.model import ItemModel, ModelFormatError
from engine.ranker import FEATURES, CoTable, LinearRanker, candidate_features, train_ranker
from engine.recommender import RankingParams, Recommender, index_entries
from engine.types import Interaction, UserState
from index.exact import ExactIndex
from stream.replay import catalog_items
from tests import shop


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> shop.TrainedShop:
    return shop.train(tmp_path_factory.mktemp("model"))


def test_the_co_occurrence_table_counts_pairs_as_the_online_counter_does() -> None:
    sequences = [
        ([0, 1, 2, 1], ["view", "view", "purchase", "view"]),
        ([2, 0], ["purchase", "add_to_cart"]),
    ]
    table = CoTable.build(sequences, n_items=4, window=5, max_partners=2)
    counter = ItemStatsCounter(window=5)
    for rows, kinds in sequences:
        previous: list[Interaction] = []
        for row, kind in zip(rows, kinds, strict=True):
            counter.add(str(row), kind, 0, previous)
            previous.append(Interaction(str(row), kind, 0))  # type: ignore[arg-type]
    for item in range(4):
        expected = sorted(
            ((int(o), c) for o, c in counter.viewed.get(str(item), {}).items()),
            key=lambda oc: (-oc[1], oc[0]),
        )[:2]
        kept = [
            (int(p), int(c))
            for p, c in zip(table.partners[item], table.counts[item], strict=True)
            if p >= 0
        ]
        assert kept == expected
    np.testing.assert_array_equal(table.counts_with(1, np.array([0, 2, 3, -1])), [2, 2, 0, 0])
    assert not table.counts_with(-1, np.array([0, 1])).any()


def test_each_feature_is_what_its_name_says() -> None:
    table = CoTable.build([([0, 1, 0, 2], ["view"] * 4)], n_items=4)
    features = candidate_features(
        np.array([0.9, 0.5, 0.1]),
        np.array([1, 2, 3]),
        ["shoes", "", "shoes"],
        np.array([0.3, 0.2, 0.1]),
        history=[],
        history_categories=[],
        table=table,
    )
    assert features.shape == (3, len(FEATURES))
    np.testing.assert_allclose(features[:, 0], [0.9, 0.5, 0.1])
    np.testing.assert_allclose(features[:, 1], np.log1p([0, 1, 2]))
    np.testing.assert_allclose(features[:, 2], [0.3, 0.2, 0.1])
    with_history = candidate_features(
        np.array([0.9, 0.5, 0.1]),
        np.array([1, 2, 3]),
        ["shoes", "", "shoes"],
        np.array([0.3, 0.2, 0.1]),
        history=[0, 2],  # rows, most recent last
        history_categories=["shoes", "books", "shoes", "shoes"],
        table=table,
        session=2,
    )
    # Counts with 0: item 1 twice (0-1, 1-0), item 2 once; with 2 (the last): item 1 once.
    np.testing.assert_allclose(with_history[:, 3], np.log1p([2, 1, 0]))
    np.testing.assert_allclose(with_history[:, 4], np.log1p([1, 0, 0]))
    np.testing.assert_allclose(with_history[:, 5], np.log1p([3, 1, 0]))
    np.testing.assert_allclose(with_history[:, 6], [0.75, 0.0, 0.75])


def _synthetic(users: int, informative: bool, seed: int = 0):
    """Candidates whose co_last feature marks the target (or base order already does)."""
    rng = np.random.default_rng(seed)
    features, targets = [], []
    for _ in range(users):
        f = rng.normal(size=(30, len(FEATURES)))
        f[:, 0] = np.sort(rng.normal(size=30))[::-1]
        f[:, 1] = np.log1p(np.arange(30))
        target = int(rng.integers(3, 30)) if informative else 0
        if informative:
            f[:, 4] = 0.0
            f[target, 4] = 2.0
        features.append(f)
        targets.append(target)
    return features, targets


def test_a_ranker_that_beats_the_model_order_on_held_out_users_is_kept() -> None:
    features, targets = _synthetic(200, informative=True)
    ranker, report = train_ranker(features, targets, candidates=30)
    assert ranker is not None
    assert report.used
    assert report.ranker_ndcg > report.base_ndcg + 0.5
    assert max(report.weights, key=lambda k: abs(report.weights[k])) == "co_last"
    assert report.reachable == 1.0


def test_a_ranker_that_cannot_beat_the_model_order_is_not_used() -> None:
    features, targets = _synthetic(200, informative=False)
    ranker, report = train_ranker(features, targets, candidates=30)
    assert ranker is None
    assert not report.used
    assert report.base_ndcg == 1.0


def test_bad_ranker_arrays_are_refused() -> None:
    ones = np.ones(len(FEATURES))
    with pytest.raises(ValueError, match="weights"):
        LinearRanker(np.array([math.nan] * len(FEATURES)), ones * 0, ones)
    with pytest.raises(ValueError, match="candidates"):
        LinearRanker(ones, ones * 0, ones, candidates=0)


def _ranked_model(model: ItemModel, weights: list[float]) -> ItemModel:
    events = shop.events(users=30, per_user=12, seed=5)
    rows = [model.index[i] for i in events["item_id"]]
    table = CoTable.build([(rows, events["type"].tolist())], model.n_items)
    ranker = LinearRanker(
        np.asarray(weights, dtype=np.float64),
        np.zeros(len(FEATURES)),
        np.ones(len(FEATURES)),
        candidates=40,
    )
    ranked = replace(model, ranker=ranker, cotable=table)
    return replace(ranked, version=_version_of(ranked))


def test_the_worker_serves_the_order_the_offline_code_scores(trained: shop.TrainedShop) -> None:
    # Weights that reorder a lot: co-occurrence and category over the model's score.
    model = _ranked_model(trained.model, [0.2, 0.0, -1.0, 1.0, 2.0, 0.5, 1.5])
    index = ExactIndex(model.query_dim + 1)
    index.upsert(*index_entries(model))
    # Near-duplicate filtering off: it is a later step, the same with or without a ranker.
    params = RankingParams(k=10, near_duplicate_cosine=2.0)
    rec = Recommender(model, index, Catalog(catalog_items(shop.catalog())), params)
    history = ["running-1", "books-3", "running-4", "kitchen-9", "running-2"]
    state = UserState("u", tuple(Interaction(i, "view", n) for n, i in enumerate(history)))
    online = [i.item_id for i in rec.recommend([state], ["t"], now_ms=1)[0].recommendation.items]
    scores = model.score(model.embed_user(history, ["view"] * 5))
    offline_scores = model.reranked(scores, history)
    offline_scores[[model.index[i] for i in history]] = -np.inf
    offline = [model.item_ids[i] for i in np.argsort(-offline_scores, kind="stable")[:10]]
    assert online == offline
    plain = np.argsort(
        -np.where(
            np.isin(np.arange(model.n_items), [model.index[i] for i in history]), -np.inf, scores
        )
    )[:10]
    assert offline != [model.item_ids[i] for i in plain]  # the ranker changed the order
    published = [i.score for i in rec.recommend([state], ["t"], now_ms=1)[0].recommendation.items]
    assert published == sorted(published, reverse=True)


def test_the_ranker_is_saved_versioned_and_checked(
    trained: shop.TrainedShop, tmp_path: Path
) -> None:
    model = _ranked_model(trained.model, [1.0, -0.5, 0.0, 0.3, 0.2, 0.1, 0.4])
    assert model.version != trained.model.version
    model.save(tmp_path / "m")
    loaded = ItemModel.load(tmp_path / "m")
    assert loaded.ranker is not None
    assert loaded.ranker.params() == model.ranker.params()  # type: ignore[union-attr]
    np.testing.assert_array_equal(loaded.cotable.partners, model.cotable.partners)  # type: ignore[union-attr]
    history = ["books-1", "books-2"]
    scores = model.score(model.embed_user(history, ["view", "view"]))
    np.testing.assert_array_equal(loaded.reranked(scores, history), model.reranked(scores, history))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["ranker"]["candidates"] = 41
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(tmp_path / "m")
