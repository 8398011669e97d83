"""Building the candidate index of a trained model: ``streamrec index build``.

Every item of the model is indexed with its popularity-augmented vector, catalog items the
model never saw from their content, and the index kind is chosen by catalog size and
measured recall (:mod:`streamrec.index.tuning`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from streamrec.engine.ports import FloatArray
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.recommender import Recommender, index_entries, index_queries
from streamrec.index.device import DeviceChoice, choose_device
from streamrec.index.exact import ExactIndex
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.index.tuning import default_candidates, tune_index


class ModelNotFoundError(FileNotFoundError):
    """The model folder holds no trained model (``model.json``)."""


def build_index(
    model_dir: Path,
    factory: str = "auto",
    device: DeviceChoice = "auto",
    say: Callable[[str], None] | None = None,
) -> tuple[int, int, str]:
    """Build the FAISS index of the model in ``model_dir`` and save it to ``model_dir/index``.

    Every item of the model is indexed with its popularity-augmented vector; catalog items
    (``model_dir/catalog.parquet``) the model never saw are indexed from their content, as
    the worker does for new items. Used by ``streamrec index build`` and the replay
    evaluation, so both serve the same index.

    ``factory="auto"`` chooses by catalog size (:mod:`streamrec.index.tuning`): exact search up to
    50,000 items, above that the fastest approximate setting with recall@100 >= 0.95
    against exact search, measured on these vectors with queries of one-item histories;
    the measurements go to ``model_dir/index/tuning.json``.

    Returns:
        (items indexed, of which from content, the index factory used).

    Raises:
        ModelNotFoundError: No model in ``model_dir``.
    """
    if not (model_dir / "model.json").is_file():
        msg = f"no model in {model_dir} (model.json missing); run `streamrec train`"
        raise ModelNotFoundError(msg)
    model = ItemModel.load(model_dir)
    ids, vectors = index_entries(model)
    # Everything to index first: the model's items, and the catalog items the model never
    # saw, from their content as the worker does for new items. The index is chosen for
    # all of them (a catalog can be far larger than what the model was trained on).
    staging = ExactIndex(vectors.shape[1])
    staging.upsert(ids, vectors)
    catalog_path = model_dir / "catalog.parquet"
    added = 0
    if catalog_path.is_file():
        recommender = Recommender(model, staging, Catalog())
        for item in catalog_items(pd.read_parquet(catalog_path)):
            if item.item_id not in model.index:
                recommender.apply_item(item)
                added += 1
    ids, vectors = staging.entries()
    params: dict[str, int] = {}
    tuning = None
    if factory == "auto":
        factory, params, tuning = _choose_index(model, vectors, say)
    index = FaissItemIndex(vectors.shape[1], factory, choose_device(device), params=params)
    index.upsert(ids, vectors)
    index.save(model_dir / "index")
    tuning_path = model_dir / "index" / "tuning.json"
    if tuning is not None:
        tuning_path.write_text(json.dumps(tuning, indent=2) + "\n")
    else:
        tuning_path.unlink(missing_ok=True)
    return len(index), added, index.factory


def _choose_index(
    model: ItemModel, vectors: FloatArray, say: Callable[[str], None] | None
) -> tuple[str, dict[str, int], dict[str, Any] | None]:
    """(factory, search params, tuning report or None) for ``--factory auto``."""
    candidates = default_candidates(len(vectors))
    if [c.factory for c in candidates] == ["Flat"]:
        return "Flat", {}, None
    report = tune_index(vectors, index_queries(model), candidates=candidates, progress=say)
    choice = report.choice
    if say is not None:
        say(
            f"chose {choice.factory} {choice.params}: recall@{report.k} {choice.recall:.4f}, "
            f"{report.speedup:.1f}x exact search"
        )
    return choice.factory, dict(choice.params), report.as_dict()
