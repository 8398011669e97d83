"""The learned second stage: features, training, persistence, and the same order online."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamrec.engine.offline.hybrid_training import _version_of
from streamrec.engine.serving.candidates import ranker_inputs, reranked_scores
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.features import candidate_features
from streamrec.engine.serving.item_stats import ItemStats, ItemStatsCounter, TrendingItem
from streamrec.engine.serving.model import ItemModel, ModelFormatError
from streamrec.engine.serving.ranker import (
    FEATURES,
    SOURCES,
    CandidateContext,
    CoTable,
    LinearRanker,
    RankerSettings,
    merge_sources,
    train_ranker,
)
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries
from streamrec.engine.types import Interaction, Item, UserState
from streamrec.index.exact import ExactIndex
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


def test_the_co_occurrence_source_proposes_the_partners_of_the_last_items() -> None:
    table = CoTable.build([([0, 1, 0, 2, 3], ["view"] * 5)], n_items=5)
    # Counts: 0-1 x2, 0-2 x2, 0-3 x1, 1-2 x1, 1-3 x1, 2-3 x1 (window 5).
    assert table.partners_of([0], limit=10) == [1, 2, 3]
    assert table.partners_of([0, 3], limit=2) == [1, 2]  # 1: 2+1, 2: 2+1, 0: 1 -> ties by row
    # The history items themselves are partners too, unless excluded (the worker excludes
    # what the user has seen).
    assert table.partners_of([0, 3], limit=10, excluded={1}) == [2, 0, 3]
    assert table.partners_of([0, 3], limit=10, excluded={0, 1, 3}) == [2]
    assert table.partners_of([-1], limit=10) == []


def test_batched_co_occurrence_lookups_match_counting_pair_by_pair() -> None:
    rng = np.random.default_rng(3)
    n, m = 40, 6
    partners = np.full((n, m), -1, dtype=np.int32)
    counts = np.zeros((n, m), dtype=np.int32)
    for item in range(n):
        k = int(rng.integers(0, m + 1))
        partners[item, :k] = rng.choice(n, size=k, replace=False)
        counts[item, :k] = np.sort(rng.integers(1, 9, size=k))[::-1]
    table = CoTable(partners, counts)

    def count(item: int, other: int) -> int:
        if not 0 <= item < n:
            return 0
        found = dict(zip(partners[item].tolist(), counts[item].tolist(), strict=True))
        return 0 if other < 0 else found.get(other, 0)

    histories = [[1, 2, 3], [5, 5, -1], [n + 1], [], *rng.integers(-1, n, (8, 4)).tolist()]
    exclusions = [{int(r) for r in rng.choice(n, size=5, replace=False)} for _ in histories]
    expected = []
    for history, excluded in zip(histories, exclusions, strict=True):
        summed: dict[int, int] = {}
        for item in history:
            for other in range(n):
                if count(item, other) and other not in excluded:
                    summed[other] = summed.get(other, 0) + count(item, other)
        ranked = [r for r, _ in sorted(summed.items(), key=lambda rc: (-rc[1], rc[0]))]
        expected.append(ranked[:7])
        assert table.partners_of(history, limit=7, excluded=excluded) == ranked[:7]
        assert table.partners_of(history, limit=0) == []
    # A whole batch at once, each history with its own exclusions: the same lists.
    assert table.partners_batch(histories, 7, exclusions) == expected
    assert table.partners_batch([], 7, []) == []


def test_sources_merge_without_repeats_and_remember_who_proposed_what() -> None:
    keys, flags = merge_sources(["a", "b"], ["b", "c"], ["d", "a"], ["e"], excluded={"d"})
    assert keys == ["a", "b", "c", "e"]
    assert flags.shape == (4, len(SOURCES))
    assert flags.tolist() == [
        [True, False, True, False],
        [True, True, False, False],
        [False, True, False, False],
        [False, False, False, True],
    ]
    empty, none = merge_sources([])
    assert empty == []
    assert none.shape == (0, len(SOURCES))


def _features(**overrides: object) -> np.ndarray:
    args: dict[str, object] = {
        "scores": np.array([0.9, 0.5, 0.1]),
        "candidates": np.array([1, 2, 3]),
        "sources": np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool),
        "categories": ["shoes", "", "shoes"],
        "prices": np.array([100.0, np.nan, 25.0]),
        "popularity": np.array([0.3, 0.2, 0.1]),
        "user": CandidateContext([], [], []),
        "table": CoTable.build([([0, 1, 0, 2], ["view"] * 4)], n_items=4),
    }
    args.update(overrides)
    return candidate_features(**args)  # type: ignore[arg-type]


def test_each_feature_is_what_its_name_says() -> None:
    features = _features()
    assert features.shape == (3, len(FEATURES))
    named = dict(zip(FEATURES, features.T, strict=True))
    np.testing.assert_allclose(named["score"], [0.9, 0.5, 0.1])
    np.testing.assert_allclose(named["log_rank"], np.log1p([0, 1, 2]))
    np.testing.assert_allclose(named["popularity"], [0.3, 0.2, 0.1])
    for empty in ("co_max", "co_last", "co_sum", "category_share", "category_recency"):
        assert not named[empty].any(), empty
    assert not named["price_match"].any()  # no history prices: no price band to match
    np.testing.assert_array_equal(named["from_ann"], [1, 1, 0])
    np.testing.assert_array_equal(named["from_cooccurrence"], [0, 1, 0])
    np.testing.assert_array_equal(named["from_trending"], [0, 0, 1])
    np.testing.assert_array_equal(named["from_fresh"], [0, 0, 1])
    user = CandidateContext(
        rows=[0, 2],  # most recent last
        categories=["shoes", "books", "shoes", "books"],
        prices=[50.0, np.nan, 200.0],
    )
    with_history = dict(zip(FEATURES, _features(user=user, session=2).T, strict=True))
    # Counts with 0: item 1 twice (0-1, 1-0), item 2 once; with 2 (the last): item 1 once.
    np.testing.assert_allclose(with_history["co_max"], np.log1p([2, 1, 0]))
    np.testing.assert_allclose(with_history["co_last"], np.log1p([1, 0, 0]))
    np.testing.assert_allclose(with_history["co_sum"], np.log1p([3, 1, 0]))
    np.testing.assert_allclose(with_history["category_share"], [0.5, 0.0, 0.5])
    # Shoes were met 1 item ago (the last item is books).
    np.testing.assert_allclose(with_history["category_recency"], [0.5, 0.0, 0.5])
    # The user's price band: the median of log 50 and log 200 = log 100.
    np.testing.assert_allclose(with_history["price_match"], [1.0, 0.0, 0.25])


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
    ranker, report = train_ranker(features, targets, settings=RankerSettings(candidates=30))
    assert ranker is not None
    assert report.used
    assert report.ranker_ndcg > report.base_ndcg + 0.5
    assert max(report.weights, key=lambda k: abs(report.weights[k])) == "co_last"
    assert report.reachable == 1.0


def test_a_ranker_that_cannot_beat_the_model_order_is_not_used() -> None:
    features, targets = _synthetic(200, informative=False)
    ranker, report = train_ranker(features, targets, settings=RankerSettings(candidates=30))
    assert ranker is None
    assert not report.used
    assert report.base_ndcg == 1.0


def test_bad_ranker_arrays_are_refused() -> None:
    ones = np.ones(len(FEATURES))
    with pytest.raises(ValueError, match="weights"):
        LinearRanker(np.array([math.nan] * len(FEATURES)), ones * 0, ones)
    with pytest.raises(ValueError, match="candidates"):
        RankerSettings(candidates=0)
    with pytest.raises(ValueError, match="trending"):
        RankerSettings(trending_candidates=-1)
    with pytest.raises(ValueError, match="retrained"):
        LinearRanker(np.ones(7), np.zeros(7), np.ones(7))  # a ranker of an older release


def _ranked_model(model: ItemModel, weights: list[float]) -> ItemModel:
    events = shop.events(users=30, per_user=12, seed=5)
    rows = [model.index[i] for i in events["item_id"]]
    table = CoTable.build([(rows, events["type"].tolist())], model.n_items)
    ranker = LinearRanker(
        np.asarray(weights, dtype=np.float64),
        np.zeros(len(FEATURES)),
        np.ones(len(FEATURES)),
        RankerSettings(candidates=40),
    )
    ranked = replace(model, ranker=ranker, cotable=table)
    return replace(ranked, version=_version_of(ranked))


def _weights(**named: float) -> list[float]:
    return [named.get(name, 0.0) for name in FEATURES]


def _online_and_offline(
    model: ItemModel, history: list[str], stats: ItemStats | None = None, k: int = 10
) -> tuple[list[str], list[str], Recommender]:
    index = ExactIndex(model.query_dim + 1)
    index.upsert(*index_entries(model))
    # Near-duplicate filtering off: it is a later step, the same with or without a ranker.
    params = RankingParams(k=k, near_duplicate_cosine=2.0)
    rec = Recommender(model, index, Catalog(catalog_items(shop.catalog())), params)
    state = UserState("u", tuple(Interaction(i, "view", n) for n, i in enumerate(history)))
    ranked = rec.recommend([state], ["t"], now_ms=1, stats=stats)[0].recommendation.items
    online = [i.item_id for i in ranked]
    assert [i.score for i in ranked] == sorted((i.score for i in ranked), reverse=True)
    trending = [] if stats is None else sorted(stats.trending, key=lambda i: stats.trending[i].rank)
    scores = model.score(model.embed_user(history, ["view"] * len(history)))
    offline_scores = reranked_scores(model, scores, history, [model.index[i] for i in trending])
    offline_scores[[model.index[i] for i in history]] = -np.inf
    offline = [model.item_ids[i] for i in np.argsort(-offline_scores, kind="stable")[:k]]
    return online, offline, rec


HISTORY = ["running-1", "books-3", "running-4", "kitchen-9", "running-2"]


def test_the_worker_serves_the_order_the_offline_code_scores(trained: shop.TrainedShop) -> None:
    # Weights that reorder a lot: co-occurrence and category over the model's score.
    weights = _weights(
        score=0.2, popularity=-1.0, co_max=1.0, co_last=2.0, co_sum=0.5, category_share=1.5,
        category_recency=0.5, price_match=0.5, from_cooccurrence=0.3,
    )  # fmt: skip
    model = _ranked_model(trained.model, weights)
    online, offline, _ = _online_and_offline(model, HISTORY)
    assert online == offline
    scores = model.score(model.embed_user(HISTORY, ["view"] * 5))
    seen = [model.index[i] for i in HISTORY]
    plain = np.argsort(-np.where(np.isin(np.arange(model.n_items), seen), -np.inf, scores))[:10]
    assert offline != [model.item_ids[i] for i in plain]  # the ranker changed the order


def _few_from_the_index(model: ItemModel, **named: float) -> ItemModel:
    """The shop model with a ranker that takes only the 3 best items by score from the
    index and prefers what the ``named`` weights say."""
    ranked = _ranked_model(model, _weights(**named))
    settings = RankerSettings(candidates=3, trending_candidates=2)
    return replace(ranked, ranker=replace(ranked.ranker, settings=settings))  # type: ignore[type-var]


def test_trending_items_reach_the_list_through_their_own_source(
    trained: shop.TrainedShop,
) -> None:
    model = _few_from_the_index(trained.model, score=0.1, from_trending=3.0)
    scores = model.score(model.embed_user(HISTORY, ["view"] * 5))
    seen = [model.index[i] for i in HISTORY]
    by_score = [int(i) for i in np.argsort(-scores, kind="stable") if i not in seen]
    # Trending: the two unseen items the model likes least (far from the index's top 3).
    cold = [model.item_ids[i] for i in by_score[-2:]]
    stats = ItemStats(trending={i: TrendingItem(i, 9.0, r) for r, i in enumerate(cold, 1)})
    online, offline, _ = _online_and_offline(model, HISTORY, stats)
    assert online == offline
    assert set(online[:2]) == set(cold)


def test_an_experiment_variant_can_turn_a_source_off_or_reweigh_the_ranker(
    trained: shop.TrainedShop,
) -> None:
    """``RankingParams.sources`` and ``ranker_weights`` (an A/B variant's overrides) act on
    one view of the recommender; the shared model keeps its learned weights."""
    model = _few_from_the_index(trained.model, score=0.1, from_trending=3.0)
    scores = model.score(model.embed_user(HISTORY, ["view"] * 5))
    seen = [model.index[i] for i in HISTORY]
    by_score = [int(i) for i in np.argsort(-scores, kind="stable") if i not in seen]
    cold = {model.item_ids[i] for i in by_score[-2:]}
    stats = ItemStats(trending={i: TrendingItem(i, 9.0, r) for r, i in enumerate(cold, 1)})
    online, _, rec = _online_and_offline(model, HISTORY, stats)
    assert set(online[:2]) == cold  # the trending source brings them, the ranker lifts them
    state = UserState("u", tuple(Interaction(i, "view", n) for n, i in enumerate(HISTORY)))

    def served(params: RankingParams) -> list[str]:
        view = rec.with_params(params)
        items = view.recommend([state], ["t"], now_ms=1, stats=stats)[0].recommendation.items
        return [i.item_id for i in items]

    without_trending = replace(rec.params, sources=("ann", "cooccurrence", "fresh"))
    assert not cold & set(served(without_trending))
    unweighted = replace(rec.params, ranker_weights=(("from_trending", 0.0),))
    assert not cold & set(served(unweighted)[:2])
    assert served(rec.params) == online  # the original is untouched
    assert model.ranker is not None
    assert model.ranker.weights[FEATURES.index("from_trending")] == 3.0
    plain = Recommender(trained.model, rec.index, rec.catalog, rec.params)
    with pytest.raises(ValueError, match="no learned ranker"):
        plain.with_params(without_trending)


def test_co_occurring_items_reach_the_list_through_their_own_source(
    trained: shop.TrainedShop,
) -> None:
    model = _few_from_the_index(trained.model, score=0.1, co_sum=1.0, from_cooccurrence=1.0)
    online, offline, _ = _online_and_offline(model, HISTORY)
    assert online == offline
    scores = model.score(model.embed_user(HISTORY, ["view"] * 5))
    seen = [model.index[i] for i in HISTORY]
    top3 = {model.item_ids[i] for i in [int(i) for i in np.argsort(-scores) if i not in seen][:3]}
    partners = model.cotable.partners_of(seen, 50, set(seen))  # type: ignore[union-attr]
    outside = {model.item_ids[r] for r in partners} - top3
    assert outside & set(online), "a co-occurrence partner outside the index's top 3"


def test_a_new_item_enters_as_a_fresh_candidate(trained: shop.TrainedShop) -> None:
    model = _ranked_model(trained.model, _weights(score=0.1, from_fresh=5.0))
    _, _, rec = _online_and_offline(model, HISTORY)
    new = Item("garden-new", "Garden Hose Deluxe", "garden", ("garden", "hose"), price=30.0)
    rec.apply_item(new)
    state = UserState("u", tuple(Interaction(i, "view", n) for n, i in enumerate(HISTORY)))
    first = rec.recommend([state], ["t"], now_ms=1)[0].recommendation.items[0]
    assert first.item_id == "garden-new"
    assert first.reason_code == "new_arrival"


def test_the_fresh_source_looks_only_as_far_as_the_newest_items_it_needs(
    trained: shop.TrainedShop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog may hold 100,000 items indexed from their text; the fresh source runs for
    every user, so it must stop at the newest ``fresh_candidates`` available ones."""
    model = _ranked_model(trained.model, _weights(score=0.1, from_fresh=5.0))
    _, _, rec = _online_and_offline(model, HISTORY)
    for n in range(300):
        rec.apply_item(Item(f"new-{n}", f"Garden Tool {n}", "garden", ("garden",), price=10.0))
    rec.apply_item(Item("new-299", "Garden Tool 299", "garden", ("garden",), available=False))
    checked: list[str] = []
    available = rec.catalog.is_available

    def counting(item_id: str) -> bool:
        checked.append(item_id)
        return available(item_id)

    monkeypatch.setattr(rec.catalog, "is_available", counting)
    state = UserState("u", tuple(Interaction(i, "view", n) for n, i in enumerate(HISTORY)))
    items = rec.recommend([state], ["t"], now_ms=1)[0].recommendation.items
    newest = {f"new-{n}" for n in range(289, 299)}  # new-299 is unavailable
    served_new = {i.item_id for i in items if i.item_id.startswith("new-")}
    assert served_new
    assert served_new <= newest
    assert len([i for i in checked if i.startswith("new-")]) < 50


def test_the_ranker_is_saved_versioned_and_checked(
    trained: shop.TrainedShop, tmp_path: Path
) -> None:
    model = _ranked_model(trained.model, _weights(score=1.0, log_rank=-0.5, co_max=0.3))
    assert model.version != trained.model.version
    model.save(tmp_path / "m")
    loaded = ItemModel.load(tmp_path / "m")
    assert loaded.ranker is not None
    assert loaded.ranker.params() == model.ranker.params()  # type: ignore[union-attr]
    np.testing.assert_array_equal(loaded.cotable.partners, model.cotable.partners)  # type: ignore[union-attr]
    history = ["books-1", "books-2"]
    scores = model.score(model.embed_user(history, ["view", "view"]))
    np.testing.assert_array_equal(
        reranked_scores(loaded, scores, history), reranked_scores(model, scores, history)
    )
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["ranker"]["candidates"] = 41
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(tmp_path / "m")


def test_offline_trending_for_the_ranker_leaves_out_the_validation_targets() -> None:
    import pandas as pd

    from streamrec.engine.offline.hybrid_training import (
        _without_validation_targets,
        trending_at_end,
    )

    events = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u1", "u3", "u3"],
            "item_id": ["a", "b", "a", "target-1", "c", "target-3"],
            "ts": [1, 2, 3, 4, 5, 6],
        }
    )
    kept = _without_validation_targets(events)
    # Each 2+-event user's last event is their validation target; u2's only event stays.
    assert kept["item_id"].tolist() == ["a", "b", "a", "c"]
    assert trending_at_end(events.iloc[:0]) == []


def test_the_popular_fill_never_outranks_the_rankers_candidates(
    trained: shop.TrainedShop,
) -> None:
    # A ranker that loves popularity: the popular fill-up would score above the personal
    # candidates. It was never validated on items no source proposed, and offline
    # evaluation ranks those below every candidate, so the worker must too.
    model = _ranked_model(trained.model, _weights(popularity=5.0, score=0.1))
    assert model.ranker is not None
    assert model.cotable is not None
    k = 80  # more than the candidates: the list needs the fill
    online, offline, _ = _online_and_offline(model, HISTORY, k=k)
    scores = model.score(model.embed_user(HISTORY, ["view"] * len(HISTORY)))
    cands, _ = ranker_inputs(model, scores, HISTORY, model.cotable, model.ranker.settings)
    assert 0 < len(cands) < k
    assert len(online) == k
    assert online[: len(cands)] == offline[: len(cands)]


def test_a_batch_ranks_every_user_as_if_they_were_alone(trained: shop.TrainedShop) -> None:
    """The worker scores a whole batch's candidates at once: the lists must be those of
    each user ranked on their own (random histories, purchases, trending and
    co-occurrence statistics, near-duplicate filtering on)."""
    weights = _weights(
        score=0.3, popularity=-0.5, co_max=1.0, co_last=1.5, category_share=1.0,
        category_recency=0.5, price_match=0.5, from_trending=0.4,
    )  # fmt: skip
    model = _ranked_model(trained.model, weights)
    index = ExactIndex(model.query_dim + 1)
    index.upsert(*index_entries(model))
    rec = Recommender(model, index, Catalog(catalog_items(shop.catalog())), RankingParams(k=8))
    rng = np.random.default_rng(7)
    counter = ItemStatsCounter()
    states = []
    for u in range(24):
        history = [
            Interaction(str(model.item_ids[r]), str(rng.choice(["view", "purchase"])), n)  # type: ignore[arg-type]
            for n, r in enumerate(rng.integers(0, model.n_items, size=int(rng.integers(0, 15))))
        ]
        for n, i in enumerate(history):
            counter.add(i.item_id, i.type, shop.T0 + n, history[:n])
        bought = frozenset(i.item_id for i in history if i.type == "purchase")
        seen = frozenset(i.item_id for i in history)
        states.append(UserState(f"u{u}", tuple(history), bought, seen))
    stats = counter.stats([i.item_id for s in states for i in s.history], shop.T0 + 100)
    triggers = [f"e{n}" for n in range(len(states))]
    together = rec.recommend(states, triggers, now_ms=shop.T0, stats=stats)
    alone = [
        rec.recommend([s], [t], now_ms=shop.T0, stats=stats)[0]
        for s, t in zip(states, triggers, strict=True)
    ]
    for batched, single in zip(together, alone, strict=True):
        got, expected = batched.recommendation.items, single.recommendation.items
        assert len(got) == 8
        # Everything alike; scores to float32 rounding (a batch's index search is one
        # matrix product, a single user's a vector product).
        assert [replace(i, score=0.0) for i in got] == [replace(i, score=0.0) for i in expected]
        assert [i.score for i in got] == pytest.approx([i.score for i in expected], rel=1e-6)
