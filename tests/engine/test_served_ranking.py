"""Offline evaluation scores what the worker serves: its filters show up in the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.engine.offline.served import served_ranking
from streamrec.engine.serving.candidates import full_ranking
from tests import shop


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> shop.TrainedShop:
    return shop.train(tmp_path_factory.mktemp("model"))


HISTORIES = [["running-1", "running-2"], ["kitchen-3", "kitchen-5", "kitchen-8"]]


def test_the_served_scores_are_the_workers_lists_in_order(trained):
    model = trained.model
    universe = list(model.item_ids)
    events = shop.events(users=40, per_user=10)
    scores = served_ranking(model, universe, shop.catalog(), events, k=10)(
        HISTORIES, [["view"] * len(h) for h in HISTORIES]
    )
    for row, history in zip(scores, HISTORIES, strict=True):
        listed = np.flatnonzero(np.isfinite(row))
        assert len(listed) == 10
        assert sorted(row[listed].tolist(), reverse=True) == list(range(10, 0, -1))
        assert not {universe[c] for c in listed} & set(history)  # seen items excluded


def test_an_unavailable_item_costs_offline_what_it_costs_online(trained):
    model = trained.model
    universe = list(model.item_ids)
    types = [["view"] * len(h) for h in HISTORIES]
    full = full_ranking(model, universe)(HISTORIES, types)
    best = universe[int(np.argmax(np.where(np.isin(universe, HISTORIES[0]), -np.inf, full[0])))]
    catalog = shop.catalog()
    catalog.loc[catalog["item_id"] == best, "available"] = False
    served = served_ranking(model, universe, catalog, shop.events(users=40), k=10)(HISTORIES, types)
    assert not np.isfinite(served[0, universe.index(best)])  # the worker never lists it
    assert np.isfinite(full[0, universe.index(best)])  # the model's full ranking would
