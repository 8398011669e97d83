"""A small synthetic shop with known structure, for tests that need a trained model.

Four departments; each simulated user shops (almost) only in one of them, so a model
that learned anything must recommend a user items from their own department.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.engine.offline.training import TrainParams, train_item_model
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.recommender import index_entries
from streamrec.index.faiss_index import FaissItemIndex

DEPARTMENTS = {
    "running": ["Trail Runner", "Road Racer", "Tempo Short", "Pace Watch", "Run Sock"],
    "outdoor": ["Ridge Jacket", "Summit Tent", "Camp Stove", "Trek Pole", "Alpine Pack"],
    "kitchen": ["Chef Knife", "Cast Pan", "Spice Rack", "Bread Tin", "Pepper Mill"],
    "books": ["Sea Novel", "Star Atlas", "Cook Book", "Poem Set", "War Saga"],
}
PER_DEPARTMENT = 25
T0 = 1_700_000_000_000


def catalog() -> pd.DataFrame:
    rows = []
    for dept, names in DEPARTMENTS.items():
        for i in range(PER_DEPARTMENT):
            name = names[i % len(names)]
            rows.append(
                {
                    "item_id": f"{dept}-{i}",
                    "title": f"{name} {i // len(names) + 1}",
                    "category": dept,
                    "tags": [dept, name.split()[0].lower()],
                    "price": float(10 + i),
                    "description": f"{name} for {dept}",
                    "available": True,
                }
            )
    return pd.DataFrame(rows)


def events(users: int = 240, per_user: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    depts = list(DEPARTMENTS)
    types = ["view", "view", "view", "click", "add_to_cart", "purchase"]
    rows = []
    for u in range(users):
        home = depts[u % len(depts)]
        for j in range(per_user):
            dept = home if rng.random() < 0.95 else depts[rng.integers(len(depts))]
            # Items within a department have a popularity skew.
            item = min(int(rng.exponential(8)), PER_DEPARTMENT - 1)
            rows.append(
                {
                    "event_id": f"train-{u}-{j}",
                    "user_id": f"user-{u}",
                    "item_id": f"{dept}-{item}",
                    "type": types[rng.integers(len(types))],
                    "ts": T0 + (u * per_user + j) * 1000,
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TrainedShop:
    model: ItemModel
    model_dir: Path


def train(model_dir: Path, dim: int = 16) -> TrainedShop:
    """Train a small model on the synthetic shop and build its Flat index in model_dir."""
    params = TrainParams(
        dim=dim,
        windows=(10,),
        shifts=(1.0,),
        eig_powers=(0.5,),
        decays=(0.75,),
        popularity_weights=(0.0,),
    )
    cat = catalog()
    model, _ = train_item_model(events(), cat, params, seed=1, now=datetime(2026, 1, 1, tzinfo=UTC))
    model.save(model_dir)
    cat.to_parquet(model_dir / "catalog.parquet")
    ids, vectors = index_entries(model)
    index = FaissItemIndex(vectors.shape[1])
    index.upsert(ids, vectors)
    index.save(model_dir / "index")
    return TrainedShop(model, model_dir)
