"""Offline evaluation of what the worker serves: its lists, not the model's full ranking.

:func:`served_ranking` builds the worker's
:class:`~streamrec.engine.serving.recommender.Recommender` over an exact index of the
model, with the catalog and the trending items at the end of the training log, and asks it
for each test user's list, with the worker's default settings. Candidates, filters
(seen, unavailable, titles, near-duplicates), the popular fill, the learned ranker and the
reasons are the worker's own code, so whatever any of them costs shows up in the table.

The list becomes a score row for the full-ranking metrics: its items score ``k - rank``
(the first highest), every other item ``-inf``; metrics at cut-offs up to ``k`` are the
list's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.hybrid_training import trending_stats_at_end
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.item_stats import ItemStats, TrendParams
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries
from streamrec.engine.types import Interaction, Item, UserState
from streamrec.index.exact import ExactIndex

__all__ = ["served_ranking"]

#: Users ranked per call to the recommender (the worker's micro-batches are smaller).
BATCH = 256


def served_ranking(
    model: ItemModel,
    item_ids: Sequence[str],
    catalog: pd.DataFrame | None,
    train: pd.DataFrame,
    k: int,
    params: RankingParams | None = None,
) -> Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], npt.NDArray[np.float32]]:
    """A batch scorer over the columns ``item_ids`` that ranks as the worker serves.

    Args:
        model: The trained model.
        item_ids: The evaluation's item universe, in column order.
        catalog: The catalog (the worker's ``streamrec.items``); items without an entry
            get a bare one (their id as title), as a text-less catalog would give them.
        train: The training events: the trending items at their end back the ranker's
            trending source and the trending reasons, as the online counter would.
        k: List length (the largest cut-off to evaluate).
        params: The worker's ranking settings (default: the defaults, with ``k``).

    Returns:
        ``recommend(histories, types) -> (u, len(item_ids))`` float32 scores: ``k - rank``
        for listed items, ``-inf`` for the rest.
    """
    params = params or RankingParams(k=k)
    index = ExactIndex(model.query_dim + 1)
    index.upsert(*index_entries(model))
    recommender = Recommender(model, index, Catalog(), params)
    items = catalog_items(catalog) if catalog is not None else []
    listed = {item.item_id for item in items}
    items += [Item(i, i, "") for i in item_ids if i not in listed]
    for item in items:
        recommender.apply_item(item)
    now_ms = int(train["ts"].max()) if len(train) else 0
    stats = ItemStats(trending=trending_stats_at_end(train), half_life_s=TrendParams().half_life_s)
    column = {item: c for c, item in enumerate(item_ids)}

    def recommend(
        histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        out = np.full((len(histories), len(item_ids)), -np.inf, dtype=np.float32)
        for start in range(0, len(histories), BATCH):
            states = [
                UserState(
                    f"u{start + u}",
                    tuple(
                        Interaction(i, t, n)  # type: ignore[arg-type]
                        for n, (i, t) in enumerate(zip(history, kinds, strict=True))
                    ),
                    seen=frozenset(history),
                )
                for u, (history, kinds) in enumerate(
                    zip(histories[start : start + BATCH], types[start : start + BATCH], strict=True)
                )
            ]
            ranked = recommender.recommend(states, [""] * len(states), now_ms, stats)
            for u, result in enumerate(ranked, start=start):
                for rank, item in enumerate(result.recommendation.items):
                    c = column.get(item.item_id)
                    if c is not None:
                        out[u, c] = k - rank
        return out

    return recommend
