"""Per-user online adaptation: one gradient step per event, the same online and offline."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamrec.engine.offline.hybrid_training import tune_adaptation
from streamrec.engine.offline.sequential_training import ValidationSet
from streamrec.engine.serving.adaptation import AdaptationParams, adaptation, adaptations
from streamrec.engine.serving.candidates import full_ranking
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.model import ItemModel, ModelFormatError
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries
from streamrec.engine.types import Interaction, UserState
from streamrec.index.exact import ExactIndex
from tests import shop

ON = AdaptationParams(learning_rate=0.5, decay=0.9)
SHIFT = [f"running-{i}" for i in range(10)] + ["books-1", "books-2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> shop.TrainedShop:
    return shop.train(tmp_path_factory.mktemp("model"))


def test_off_is_zero_and_each_step_follows_the_formula() -> None:
    v = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    w = np.array([0.5, 1.0])
    assert not adaptation(v, w, AdaptationParams()).any()
    assert not adaptation(v[:0], w[:0], ON).any()
    p = AdaptationParams(learning_rate=0.3, decay=0.7, sharpness=2.0)
    # Step 1: no events before, margin 0. Step 2: margin cos(v0, v1) + r . v1.
    r = 0.3 * (1 - 1 / (1 + math.exp(0.0))) * v[0].astype(np.float64)
    margin = 0.6 + float(r @ v[1])
    r = 0.7 * r + 0.3 * (1 - 1 / (1 + math.exp(-2.0 * margin))) * v[1]
    np.testing.assert_allclose(adaptation(v, w, p), r, rtol=1e-6)


def _stepped(v: np.ndarray, w: np.ndarray, p: AdaptationParams) -> np.ndarray:
    """The module docstring's definition, one event at a time."""
    r = np.zeros(v.shape[1])
    total = np.zeros(v.shape[1])
    for t in range(len(v)):
        norm = np.linalg.norm(total)
        margin = (total @ v[t] / norm if norm > 0 else 0.0) + r @ v[t]
        r = p.decay * r + p.learning_rate * (1 - 1 / (1 + math.exp(-p.sharpness * margin))) * v[t]
        total += w[t] * v[t]
    return r


def test_a_batch_gives_each_user_the_vector_of_their_own_history() -> None:
    rng = np.random.default_rng(7)
    p = AdaptationParams(learning_rate=0.8, decay=0.6, sharpness=3.0)
    lengths = [0, 1, 5, 50, 17, 0, 33] * 6  # more users than one block of the batch
    vectors = [(rng.normal(size=(h, 8)) / 3).astype(np.float32) for h in lengths]
    weights = [rng.random(h) for h in lengths]
    batch = adaptations(vectors, weights, p, 8)
    assert batch.shape == (len(lengths), 8)
    assert batch.dtype == np.float32
    for u, (v, w) in enumerate(zip(vectors, weights, strict=True)):
        # Shorter histories are padded inside the batch; the padding changes nothing.
        np.testing.assert_array_equal(batch[u], adaptation(v, w, p))
        np.testing.assert_allclose(batch[u], _stepped(v, w, p), rtol=1e-5, atol=1e-7)
    assert adaptations([], [], p, 8).shape == (0, 8)
    assert not adaptations(vectors, weights, AdaptationParams(), 8).any()
    with pytest.raises(ValueError, match="2 users' vectors but 1"):
        adaptations(vectors[:2], weights[:1], p, 8)


def test_a_sure_pick_is_a_step_of_zero_not_an_overflow() -> None:
    v = np.full((3, 4), 1e3, dtype=np.float32)  # margins of ~2000: exp(-sharpness*m) ~ 0
    r = adaptation(v, np.ones(3), AdaptationParams(learning_rate=1.0, decay=0.5, sharpness=4.0))
    assert np.isfinite(r).all()


def test_an_unexpected_event_moves_the_user_more_than_an_expected_one() -> None:
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    ones = np.ones(4)
    before = adaptation(np.stack([a, a, a]), ones[:3], ON)
    step_expected = adaptation(np.stack([a, a, a, a]), ones, ON) - ON.decay * before
    step_shift = adaptation(np.stack([a, a, a, b]), ones, ON) - ON.decay * before
    # The fourth A was predicted by the three before it (margin > 1): a small step along a.
    # B was not (margin 0): half the learning rate along b.
    assert step_shift[1] == pytest.approx(ON.learning_rate / 2)
    assert step_shift[1] > 5 * step_expected[0] > 0


def test_a_taste_shift_reaches_the_top_of_the_list_at_once(trained: shop.TrainedShop) -> None:
    kinds = ["view"] * len(SHIFT)

    def books_in_top10(model: ItemModel) -> int:
        scores = model.score(model.embed_user(SHIFT, kinds))
        scores[model.rows(SHIFT)] = -np.inf
        return sum(model.item_ids[i].startswith("books") for i in np.argsort(-scores)[:10])

    plain = books_in_top10(trained.model)
    adapted = books_in_top10(replace(trained.model, adaptation=ON))
    assert plain < 5
    assert adapted == 10


def test_the_worker_computes_the_same_adapted_vector_as_the_offline_code(
    trained: shop.TrainedShop,
) -> None:
    model = replace(trained.model, adaptation=ON)
    ids, vectors = index_entries(model)
    index = ExactIndex(model.dim + 1)
    index.upsert(ids, vectors)
    rec = Recommender(model, index, Catalog(), RankingParams(k=10))
    for item in catalog_items(shop.catalog()):
        rec.apply_item(item)
    items = [*SHIFT, "no-such-item", "books-3"]
    kinds = ["view", "purchase", "click"] * 4 + ["view", "add_to_cart"]
    state = UserState(
        "u", tuple(Interaction(i, k, n) for n, (i, k) in enumerate(zip(items, kinds, strict=True)))
    )  # type: ignore[arg-type]
    online = rec.user_vector(state)
    np.testing.assert_array_equal(online, model.embed_user(items, kinds))
    assert not np.array_equal(online, trained.model.embed_user(items, kinds))


def test_the_adaptation_is_saved_versioned_and_checked(
    trained: shop.TrainedShop, tmp_path: Path
) -> None:
    from streamrec.engine.offline.hybrid_training import _version_of

    model = replace(trained.model, adaptation=ON)
    model = replace(model, version=_version_of(model))
    assert model.version != trained.model.version
    # A model without adaptation keeps the hash it had before adaptation existed.
    assert _version_of(trained.model) == trained.model.version
    model.save(tmp_path / "m")
    loaded = ItemModel.load(tmp_path / "m")
    assert loaded.adaptation == ON
    np.testing.assert_array_equal(
        loaded.embed_user(SHIFT, ["view"] * 12), model.embed_user(SHIFT, ["view"] * 12)
    )
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["adaptation"]["learning_rate"] = 0.9
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(tmp_path / "m")


def test_bad_steps_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        AdaptationParams(learning_rate=-1.0)
    with pytest.raises(ValueError, match="decay"):
        AdaptationParams(decay=0.0)
    with pytest.raises(ValueError, match="sharpness"):
        AdaptationParams(sharpness=math.inf)


def test_validation_chooses_the_step_that_ranks_the_held_out_shift_best(
    trained: shop.TrainedShop,
) -> None:
    model = trained.model
    columns = list(model.item_ids)
    rows = np.asarray(model.rows(SHIFT), dtype=np.int64)
    targets = [f"books-{i}" for i in range(3, 9)]
    validation = ValidationSet(
        history=[rows] * len(targets),
        types=[["view"] * len(SHIFT)] * len(targets),
        targets=np.asarray(model.rows(targets), dtype=np.int64),
    )
    base = full_ranking(model, columns)([SHIFT] * len(targets), validation.types)
    grid = (AdaptationParams(), ON)
    report = tune_adaptation(model, columns, base, validation, grid)
    assert [p for p, _ in report.scores] == list(grid)
    off, on = (s for _, s in report.scores)
    assert on > off
    assert report.chosen == ON
    assert report.validation_ndcg == on
    # Nothing to gain: the first step (off) is kept.
    same = tune_adaptation(model, columns, base, validation, (AdaptationParams(),) * 2)
    assert same.chosen == AdaptationParams()
