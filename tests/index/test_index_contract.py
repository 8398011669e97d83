"""One specification, run against the FAISS index and its exact numpy twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.engine.ports import CandidateIndex
from streamrec.index.exact import ExactIndex
from streamrec.index.faiss_index import FaissItemIndex, IndexFileError
from streamrec.index.table import IndexInputError

DIM = 8


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=["exact", "faiss-flat", "faiss-hnsw"])
def index(request: pytest.FixtureRequest) -> CandidateIndex:
    if request.param == "exact":
        return ExactIndex(DIM)
    if request.param == "faiss-flat":
        return FaissItemIndex(DIM)
    return FaissItemIndex(DIM, "HNSW16", params={"efSearch": 256})


@pytest.fixture
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(7).normal(size=(300, DIM)))


def ids(n: int) -> list[str]:
    return [f"item-{i}" for i in range(n)]


class TestCandidateIndexContract:
    def test_an_item_is_its_own_nearest_neighbour(self, index, vectors):
        index.upsert(ids(300), vectors)
        hits = index.search(vectors[:20], 1)
        assert [h.item_ids[0] for h in hits] == ids(20)

    def test_results_are_sorted_unique_and_at_most_k(self, index, vectors):
        index.upsert(ids(300), vectors)
        for hits in index.search(vectors[:10], 15):
            assert len(hits.item_ids) == 15
            assert len(set(hits.item_ids)) == 15
            assert list(hits.scores) == sorted(hits.scores, reverse=True)

    def test_scores_are_inner_products(self, index, vectors):
        index.upsert(ids(300), vectors)
        hits = index.search(vectors[:1], 5)[0]
        for item_id, score in zip(hits.item_ids, hits.scores, strict=True):
            row = int(item_id.split("-")[1])
            assert score == pytest.approx(float(vectors[0] @ vectors[row]), abs=1e-5)

    def test_removed_items_are_never_returned(self, index, vectors):
        index.upsert(ids(300), vectors)
        index.remove(ids(150))
        assert len(index) == 150
        assert "item-3" not in index
        for hits in index.search(vectors[:30], 50):
            assert all(int(i.split("-")[1]) >= 150 for i in hits.item_ids)

    def test_upsert_replaces_an_items_vector(self, index, vectors):
        index.upsert(ids(300), vectors)
        index.upsert(["item-0"], vectors[299:300])
        assert len(index) == 300
        top = index.search(vectors[299:300], 2)[0].item_ids
        assert set(top) == {"item-0", "item-299"}
        np.testing.assert_allclose(index.vector("item-0"), vectors[299])

    def test_new_items_are_searchable_right_after_they_are_added(self, index, vectors):
        index.upsert(ids(100), vectors[:100])
        index.upsert(["fresh"], vectors[250:251])
        assert index.search(vectors[250:251], 1)[0].item_ids == ("fresh",)

    def test_empty_index_returns_empty_hits(self, index, vectors):
        assert index.search(vectors[:2], 5)[0].item_ids == ()

    def test_k_larger_than_the_index_returns_everything(self, index, vectors):
        index.upsert(ids(5), vectors[:5])
        assert len(index.search(vectors[:1], 50)[0].item_ids) == 5

    def test_wrong_dimension_is_rejected_with_the_shapes(self, index):
        with pytest.raises(IndexInputError, match=r"shape \(n, 8\)"):
            index.upsert(["a"], np.zeros((1, 3), dtype=np.float32))

    def test_nan_vectors_are_rejected(self, index):
        bad = np.full((1, DIM), np.nan, dtype=np.float32)
        with pytest.raises(IndexInputError, match="NaN"):
            index.upsert(["a"], bad)


def test_faiss_flat_matches_the_exact_twin(vectors):
    exact, flat = ExactIndex(DIM), FaissItemIndex(DIM)
    for idx in (exact, flat):
        idx.upsert(ids(300), vectors)
        idx.remove(ids(10))
    queries = unit(np.random.default_rng(1).normal(size=(25, DIM)))
    for a, b in zip(exact.search(queries, 10), flat.search(queries, 10), strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        # Random continuous vectors have no tied scores, so the orders must agree exactly.
        assert a.item_ids == b.item_ids


def test_save_and_load_round_trip(tmp_path: Path, vectors):
    index = FaissItemIndex(DIM)
    index.upsert(ids(300), vectors)
    index.remove(["item-1"])
    index.save(tmp_path / "idx")
    loaded = FaissItemIndex.load(tmp_path / "idx")
    assert len(loaded) == 299
    assert "item-1" not in loaded
    assert loaded.search(vectors[:5], 3) == index.search(vectors[:5], 3)


def test_loading_a_missing_index_names_the_command_to_run(tmp_path: Path):
    with pytest.raises(IndexFileError, match="streamrec index build"):
        FaissItemIndex.load(tmp_path)


def test_trainable_index_types_train_on_first_add(vectors):
    index = FaissItemIndex(DIM, "IVF4,Flat", params={"nprobe": 4})
    index.upsert(ids(300), vectors)
    assert index.search(vectors[:3], 1)[0].item_ids == ("item-0",)


def test_compaction_keeps_results_after_many_updates(vectors):
    index = FaissItemIndex(DIM, compact_at=0.1)
    index.upsert(ids(300), vectors)
    for round_ in range(5):
        index.upsert(ids(100), vectors[100 * (round_ % 3) : 100 * (round_ % 3) + 100])
    assert len(index) == 300
    assert index.search(vectors[299:300], 1)[0].item_ids == ("item-299",)


def test_a_saved_ivf_index_loads_as_built_not_trained_again(tmp_path: Path, vectors, monkeypatch):
    index = FaissItemIndex(DIM, "IVF4,Flat", params={"nprobe": 2})
    index.upsert(ids(300), vectors)
    index.remove(["item-3"])
    index.save(tmp_path / "idx")

    def no_training(self):  # the saved index must be used as it is
        msg = "rebuilt on load"
        raise AssertionError(msg)

    # What was saved: the live items, trained afresh (faiss k-means is seeded).
    keep = [i for i in range(300) if i != 3]
    saved = FaissItemIndex(DIM, "IVF4,Flat", params={"nprobe": 2})
    saved.upsert([f"item-{i}" for i in keep], vectors[keep])
    monkeypatch.setattr(FaissItemIndex, "_rebuild", no_training)
    loaded = FaissItemIndex.load(tmp_path / "idx")
    assert loaded.params == {"nprobe": 2}
    assert len(loaded) == 299
    assert loaded.search(vectors[:20], 5) == saved.search(vectors[:20], 5)
    # Online additions still work on the loaded index.
    loaded.upsert(["new"], vectors[3:4])
    assert loaded.search(vectors[3:4], 1)[0].item_ids == ("new",)


def test_an_index_file_that_does_not_match_its_ids_is_refused(tmp_path: Path, vectors):
    index = FaissItemIndex(DIM)
    index.upsert(ids(300), vectors)
    index.save(tmp_path / "a")
    other = FaissItemIndex(DIM)
    other.upsert(ids(10), vectors[:10])
    other.save(tmp_path / "b")
    (tmp_path / "b" / "items.faiss").replace(tmp_path / "a" / "items.faiss")
    with pytest.raises(IndexFileError, match="disagree"):
        FaissItemIndex.load(tmp_path / "a")
