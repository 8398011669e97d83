"""The CPU retrieval benchmark (benchmarks/retrieval_cpu.py) measures what the index build
indexed for a trained model, not only the model's own items."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from streamrec.index.faiss_index import FaissItemIndex
from tests import shop

ROOT = Path(__file__).resolve().parents[2]


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "retrieval_cpu", ROOT / "benchmarks" / "retrieval_cpu.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_model_folder_is_measured_on_every_vector_its_index_holds(
    shop_model: shop.TrainedShop, tmp_path: Path
):
    folder = tmp_path / "model"
    shutil.copytree(shop_model.model_dir, folder)
    index = FaissItemIndex.load(folder / "index")
    new_item = np.zeros((1, index.dim), dtype=np.float32)
    new_item[0, 0] = 1.0  # a catalog item indexed from its text, unknown to the model
    index.upsert(["from-text-1"], new_item)
    index.save(folder / "index")

    vectors, queries = load_script().model_vectors(folder, 40)

    assert len(vectors) == shop_model.model.n_items + 1
    _, indexed = FaissItemIndex.load(folder / "index").entries()
    np.testing.assert_array_equal(vectors, indexed)
    assert queries.shape == (40, index.dim)
