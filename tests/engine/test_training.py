"""Specification of training, the item model file and the content encoder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline.evaluation import (
    PopularityRecommender,
    evaluate_full_ranking,
    format_markdown,
    leave_last_out,
)
from streamrec.engine.offline.training import (
    TrainParams,
    cooccurrence,
    factorise,
    shifted_ppmi,
    train_item_model,
)
from streamrec.engine.serving.candidates import full_ranking
from streamrec.engine.serving.content import ContentEncoder, content_tokens, hash_features
from streamrec.engine.serving.model import ItemModel, ModelFormatError, ModelNotFoundError

NOW = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)

#: A small grid so the unit tests stay fast; dim is larger than the toy catalogs' rank.
SMALL = TrainParams(
    dim=16,
    windows=(3,),
    shifts=(1.0,),
    eig_powers=(0.5,),
    decays=(0.75,),
    popularity_weights=(0.0, 0.5),
)


def _events(sequences: dict[str, Sequence[str]], kind: str = "view") -> pd.DataFrame:
    rows = [
        (f"{user}-{pos}", user, item, kind, 1_000 * pos)
        for user, items in sequences.items()
        for pos, item in enumerate(items)
    ]
    return pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "type", "ts"])


def _two_clusters(seed: int = 0) -> pd.DataFrame:
    """40 users browse only cluster-A items (a0..a9), 40 only cluster-B items (b0..b9)."""
    rng = np.random.default_rng(seed)
    sequences: dict[str, list[str]] = {}
    for cluster in ("a", "b"):
        for u in range(40):
            picks = rng.choice(10, size=5, replace=False)
            sequences[f"{cluster}-user{u}"] = [f"{cluster}{i}" for i in picks]
    return _events(sequences)


def _top(model: ItemModel, history: Sequence[str], k: int) -> list[str]:
    scores = model.score(model.embed_user(list(history), ["view"] * len(history)))
    order = [model.item_ids[i] for i in np.argsort(-scores, kind="stable")]
    return [i for i in order if i not in history][:k]


# --- the model learns structure from data --------------------------------------------------


def test_each_users_top_k_comes_from_their_own_cluster() -> None:
    model, _ = train_item_model(_two_clusters(), None, SMALL, seed=0, now=NOW)
    for history in (["a1", "a4"], ["a7"], ["b0", "b3", "b9"], ["b5"]):
        top = _top(model, history, k=5)
        assert len(top) == 5
        assert {item[0] for item in top} == {history[0][0]}, (history, top)


def test_the_item_that_always_follows_comes_first() -> None:
    # ten pairs: whenever someone views p<k>, the next thing they view is q<k>
    rng = np.random.default_rng(3)
    sequences = {}
    for u in range(60):
        pairs = rng.choice(10, size=4, replace=False)
        sequences[f"u{u}"] = [item for k in pairs for item in (f"p{k}", f"q{k}")]
    model, _ = train_item_model(_events(sequences), None, SMALL, seed=0, now=NOW)
    for k in range(10):
        assert _top(model, [f"p{k}"], k=1) == [f"q{k}"]


def test_stronger_events_pull_harder() -> None:
    # the co-occurrence of a purchase counts more than that of a view
    counts = cooccurrence(
        item_codes=np.array([0, 1, 0, 2]),
        user_codes=np.array([0, 0, 1, 1]),
        weights=np.array([4.0, 4.0, 1.0, 1.0]),
        window=1,
        n_items=3,
    ).toarray()
    assert counts[0, 1] == pytest.approx(4.0)
    assert counts[0, 2] == pytest.approx(1.0)
    np.testing.assert_array_equal(counts, counts.T)


def test_cooccurrence_decays_with_distance_and_skips_self_pairs() -> None:
    counts = cooccurrence(
        np.array([0, 1, 2, 0]), np.zeros(4, dtype=int), np.ones(4), window=2, n_items=3
    ).toarray()
    assert counts[0, 1] == pytest.approx(1.0 + 0.5)  # 0-1 at distance 1, 1-0 at distance 2
    assert counts[0, 2] == pytest.approx(0.5 + 1.0)
    assert counts[0, 0] == 0.0


def test_shifted_ppmi_drops_pairs_below_the_shift() -> None:
    counts = np.array([[0.0, 10.0, 1.0], [10.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    plain = shifted_ppmi(counts, shift=1.0).toarray()
    shifted = shifted_ppmi(counts, shift=100.0).toarray()
    assert plain[0, 1] > 0
    assert not shifted.any()


def test_factorise_is_deterministic_for_a_seed_and_keeps_positive_eigenvalues() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((400, 400))
    matrix = shifted_ppmi(dense + dense.T, shift=1.0)
    q1, lam1 = factorise(matrix, 8, np.random.default_rng(7))
    q2, lam2 = factorise(matrix, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(lam1, lam2)
    assert (lam1 > 0).all()
    assert (np.diff(lam1) <= 0).all()


# --- reproducibility, report, progress --------------------------------------------------------


def test_same_seed_same_data_gives_identical_models() -> None:
    events = _two_clusters()
    m1, _ = train_item_model(events, None, SMALL, seed=5, now=NOW)
    m2, _ = train_item_model(events, None, SMALL, seed=5, now=NOW)
    np.testing.assert_array_equal(m1.vectors, m2.vectors)
    assert m1.version == m2.version


def test_version_names_the_time_and_content() -> None:
    model, _ = train_item_model(_two_clusters(), None, SMALL, seed=0, now=NOW)
    assert re.fullmatch(r"item2vec-20240501123000-[0-9a-f]{8}", model.version)
    default, _ = train_item_model(_two_clusters(), None, SMALL, seed=0)
    assert default.created_at == datetime.fromtimestamp(4, tz=UTC)  # the last event's time


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        train_item_model(_two_clusters(), None, SMALL, seed=0, now=datetime(2024, 1, 1))  # noqa: DTZ001


def test_report_holds_validation_metrics_of_model_and_popularity() -> None:
    calls: list[tuple[str, int, int]] = []
    model, report = train_item_model(
        _two_clusters(), None, SMALL, seed=0, now=NOW, progress=lambda *a: calls.append(a)
    )
    assert report.validation is not None
    assert report.validation_popularity is not None
    assert report.validation.n_users == 80
    assert len(report.grid) == 2
    assert report.chosen in [p.hyperparameters for p in report.grid]
    assert model.scoring.popularity_weight == report.chosen.popularity_weight
    assert model.metrics["validation.ndcg@10"] == report.validation["ndcg@10"].mean
    assert ("validate", 2, 2) in calls
    assert calls[-1][0] == "fit"
    assert "popularity" in report.to_markdown()


def test_bad_params_are_refused_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="TrainParams.decays"):
        TrainParams(decays=(1.5,))
    with pytest.raises(ValueError, match="TrainParams.windows"):
        TrainParams(windows=())


# --- the model file -------------------------------------------------------------------------


def _catalog_for_clusters() -> pd.DataFrame:
    rows = [
        (f"{c}{i}", f"{name} film {i}", genre, [genre, "1990"], np.nan, "", True)
        for c, name, genre in (("a", "space", "Sci-Fi"), ("b", "love", "Romance"))
        for i in range(10)
    ]
    rows.append(("a-new", "space film returns", "Sci-Fi", ["Sci-Fi"], np.nan, "", True))
    return pd.DataFrame(
        rows,
        columns=["item_id", "title", "category", "tags", "price", "description", "available"],
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model, _ = train_item_model(_two_clusters(), _catalog_for_clusters(), SMALL, seed=0, now=NOW)
    model.save(tmp_path / "m")
    loaded = ItemModel.load(tmp_path / "m")
    assert loaded.version == model.version
    assert loaded.item_ids == model.item_ids
    assert loaded.item_categories == model.item_categories
    np.testing.assert_array_equal(loaded.vectors, model.vectors)
    np.testing.assert_array_equal(loaded.popularity, model.popularity)
    assert loaded.user_params == model.user_params
    assert loaded.scoring == model.scoring
    assert loaded.created_at == NOW
    assert loaded.metrics.keys() == model.metrics.keys()
    assert loaded.content is not None
    assert model.content is not None
    np.testing.assert_array_equal(
        loaded.content.encode("space", "Sci-Fi", [], ""),
        model.content.encode("space", "Sci-Fi", [], ""),
    )
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (meta["version"], meta["dim"], meta["n_items"]) == (model.version, 16, 21)
    assert meta["user_params"]["decay"] == model.user_params.decay


def test_loading_a_missing_model_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model.json"):
        ItemModel.load(tmp_path / "nothing")


def test_loading_a_foreign_json_names_the_format_field(tmp_path: Path) -> None:
    model, _ = train_item_model(_two_clusters(), None, SMALL, seed=0, now=NOW)
    model.save(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFormatError, match="'format' must be 'streamrec-item-model'"):
        ItemModel.load(tmp_path)


def test_arrays_from_another_model_are_refused(tmp_path: Path) -> None:
    first, _ = train_item_model(_two_clusters(seed=0), None, SMALL, seed=0, now=NOW)
    second, _ = train_item_model(_two_clusters(seed=1), None, SMALL, seed=0, now=NOW)
    first.save(tmp_path / "first")
    second.save(tmp_path / "second")
    (tmp_path / "second" / "model.npz").replace(tmp_path / "first" / "model.npz")
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(tmp_path / "first")


def test_a_corrupt_npz_is_a_format_error(tmp_path: Path) -> None:
    model, _ = train_item_model(_two_clusters(), None, SMALL, seed=0, now=NOW)
    model.save(tmp_path)
    (tmp_path / "model.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelFormatError, match="model.npz"):
        ItemModel.load(tmp_path)


# --- content encoder (cold start) -----------------------------------------------------------


def test_a_catalog_only_item_gets_a_vector_from_its_text() -> None:
    model, report = train_item_model(
        _two_clusters(), _catalog_for_clusters(), SMALL, seed=0, now=NOW
    )
    assert report.n_content_items == 1
    row = model.index["a-new"]
    assert model.popularity[row] == 0
    assert model.item_categories[row] == "Sci-Fi"
    sims = model.vectors @ model.vectors[row]
    a_rows = [model.index[f"a{i}"] for i in range(10)]
    b_rows = [model.index[f"b{i}"] for i in range(10)]
    assert sims[a_rows].min() > sims[b_rows].max()


def test_content_encoder_maps_text_to_the_target_space() -> None:
    texts = [("Alien", "Sci-Fi", ["space"], ""), ("Heat", "Crime", ["heist"], "")]
    targets = np.eye(2, dtype=np.float32)
    enc = ContentEncoder.fit(texts, targets, n_features=1024, ridge=0.1)
    assert int(np.argmax(enc.encode("Aliens in space", "Sci-Fi", ["space"], ""))) == 0
    assert int(np.argmax(enc.encode("The heist", "Crime", [], ""))) == 1
    v = enc.encode("", "", [], "")
    assert v.shape == (2,)
    assert v.dtype == np.float32


def test_content_encoder_large_catalog_path_matches_exact_ridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    texts = [(f"title {i % 7}", f"cat{i % 3}", [f"t{i % 5}"], "") for i in range(60)]
    targets = rng.standard_normal((60, 4)).astype(np.float32)
    exact = ContentEncoder.fit(texts, targets, n_features=256, ridge=1.0)
    monkeypatch.setattr("streamrec.engine.serving.content.DUAL_SOLVE_MAX_ITEMS", 10)
    iterative = ContentEncoder.fit(texts, targets, n_features=256, ridge=1.0)
    np.testing.assert_allclose(iterative.weights, exact.weights, atol=1e-4)


def test_content_tokens_cover_words_category_and_tags() -> None:
    tokens = content_tokens("Toy Story", "Animation", ["Comedy"], "A 1995 film")
    assert tokens == [
        "toy",
        "story",
        "a",
        "1995",
        "film",
        "cat:animation",
        "tag:comedy",
        "__bias__",
    ]


def test_feature_hashing_does_not_depend_on_pythons_hash_seed() -> None:
    code = (
        "from streamrec.engine.serving.content import hash_features; "
        "x = hash_features([['toy', 'cat:animation', 'tag:comedy']], 1024); "
        "print(sorted(zip(x.indices.tolist(), x.data.round(6).tolist())))"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    x = hash_features([["toy", "cat:animation"]], 1024)
    assert np.linalg.norm(x.toarray()) == pytest.approx(1.0)


# --- MovieLens-100K: the model must beat popularity -----------------------------------------


@pytest.mark.slow
def test_beats_popularity_on_movielens_leave_last_out() -> None:
    from streamrec.engine.offline.datasets import DatasetError, load_movielens_100k

    try:
        data = load_movielens_100k()
    except DatasetError as exc:
        pytest.skip(f"MovieLens-100K unavailable: {exc}")
    split = leave_last_out(data.events)
    model, report = train_item_model(split.train, data.catalog, TrainParams(), seed=0, now=NOW)
    universe = split.item_ids()
    ours = evaluate_full_ranking(full_ranking(model, universe), split, universe)
    popular = evaluate_full_ranking(
        PopularityRecommender.fit(split.train, universe), split, universe
    )
    table = format_markdown({"item2vec": ours, "popularity": popular})
    assert ours.n_users == popular.n_users == 943
    for metric in ("ndcg@10", "recall@10"):
        gap = ours[metric].mean - popular[metric].mean
        assert gap > ours[metric].half_width, table
        assert gap > popular[metric].half_width, table
    assert report.validation is not None
    assert report.validation_popularity is not None
    assert report.validation["ndcg@10"].mean > report.validation_popularity["ndcg@10"].mean
