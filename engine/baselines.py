"""Strong non-neural baselines, fitted on a split's training events, tuned on validation.

Every baseline is an :data:`engine.evaluation.Recommender`: ``recommend(histories, types)
-> (u, n)`` scores over the columns ``item_ids``. A user is known only through the history
passed in, the same input our model gets; the factor and neighbour models turn it into a row
of the user-item matrix exactly as the training rows are built (fold-in).

User-item matrix X (m, n): ``X[u, i]`` is the largest event-type weight
(:class:`engine.user_embedding.EventWeights`: view 1, click 2, add_to_cart 3, purchase 4)
among u's events on i; ``weights=None`` makes it binary. Items with no training event score
-inf (never recommended) in the kNN, EASE and ALS models.

* :class:`RecentPopularityRecommender`: interaction counts in the last ``window_days`` of
  the training period (ending at its last event); ties broken by all-time counts.
* :class:`ItemKNNRecommender`: cosine similarity of the item columns of X; each item keeps
  its ``k`` most similar items; ``score(u, i) = sum_j x_uj * s_ji``.
* :class:`EASERecommender` (Steck, 2019): ``B = I - P / diag(P)`` (column j divided by
  ``P_jj``), ``P = (XᵀX + λI)⁻¹``, so ``diag(B) = 0``; ``score(u) = x_u B``.
* :class:`ALSRecommender`: implicit-feedback ALS (Hu, Koren & Volinsky, 2008) from PyPI
  ``implicit``'s CPU model, confidence ``alpha * x``; a history's user factors come from
  implicit's exact least-squares user step (``recalculate_user``).

:func:`tune` picks hyperparameters by validation NDCG@10 (full ranking, seen excluded).

Errors::

    BaselineUnavailableError (RuntimeError)   an optional dependency (implicit) is missing

Example:
    >>> knn = ItemKNNRecommender.fit(split.train, items, k=50)  # doctest: +SKIP
    >>> evaluate_full_ranking(knn, split, items)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from engine.evaluation import Recommender, Split, evaluate_full_ranking
from engine.user_embedding import EventWeights

__all__ = [
    "ALSRecommender",
    "BaselineGrids",
    "BaselineUnavailableError",
    "EASERecommender",
    "ItemKNNRecommender",
    "RecentPopularityRecommender",
    "Tuned",
    "tune",
    "user_item_matrix",
]

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_BLOCK = 1024
Scores = npt.NDArray[np.float64]


class BaselineUnavailableError(RuntimeError):
    """A baseline's optional dependency is not installed."""


@dataclass(frozen=True)
class BaselineGrids:
    """What :func:`tune` tries on validation for each tuned baseline.

    Attributes:
        knn_neighbours: Neighbours k kept per item.
        ease_lambdas: L2 penalties λ.
        als_factors: Latent dimensions.
        als_regularizations: L2 penalties.
        als_iterations: ALS sweeps.
        als_alphas: Confidence scales (``c = alpha * x``).
        weights: Event-type weights of X, or None for a binary X.
        ease_max_items: EASE inverts an (n, n) matrix; larger catalogs are refused.
    """

    knn_neighbours: tuple[int, ...] = (20, 50, 100, 200)
    ease_lambdas: tuple[float, ...] = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    als_factors: tuple[int, ...] = (32, 64, 128)
    als_regularizations: tuple[float, ...] = (0.01, 0.1, 1.0)
    als_iterations: tuple[int, ...] = (15, 30)
    als_alphas: tuple[float, ...] = (1.0, 10.0)
    weights: EventWeights | None = field(default_factory=EventWeights)
    ease_max_items: int = 20_000

    def als_grid(self) -> list[dict[str, float]]:
        """Every ALS grid point, in search order."""
        return [
            {"factors": f, "regularization": r, "iterations": i, "alpha": a}
            for f, r, i, a in itertools.product(
                self.als_factors, self.als_regularizations, self.als_iterations, self.als_alphas
            )
        ]


def user_item_matrix(
    histories: Sequence[Sequence[str]],
    types: Sequence[Sequence[str]],
    index: Mapping[str, int],
    weights: EventWeights | None,
) -> sp.csr_matrix:
    """Rows of X for histories; items outside ``index`` are dropped.

    Args:
        histories: u item-id lists.
        types: The matching u event-type lists.
        index: Column of each item.
        weights: Event-type weights, or None for binary.

    Returns:
        (u, n) float32 CSR with the largest weight of each (user, item).

    Raises:
        ValueError: A history and its types differ in length, or a type is unknown.
    """
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, (items, kinds) in enumerate(zip(histories, types, strict=True)):
        if len(items) != len(kinds):
            msg = f"history {r} has {len(items)} items but {len(kinds)} types"
            raise ValueError(msg)
        for item, kind in zip(items, kinds, strict=True):
            col = index.get(item)
            value = 1.0 if weights is None else weights.of(kind)
            if col is not None:
                rows.append(r)
                cols.append(col)
                vals.append(value)
    frame = pd.DataFrame({"r": rows, "c": cols, "v": vals}, dtype=np.float64)
    best = frame.groupby(["r", "c"], sort=False)["v"].max()
    r_idx = best.index.get_level_values(0).to_numpy(dtype=np.intp)
    c_idx = best.index.get_level_values(1).to_numpy(dtype=np.intp)
    shape = (len(histories), len(index))
    coo = sp.coo_matrix((best.to_numpy(dtype=np.float32), (r_idx, c_idx)), shape=shape)
    return sp.csr_matrix(coo)


def _training_matrix(
    events: pd.DataFrame, index: Mapping[str, int], weights: EventWeights | None
) -> sp.csr_matrix:
    grouped = events.groupby("user_id", sort=True)
    items = [list(map(str, h)) for h in grouped["item_id"].agg(list)]
    kinds = [list(map(str, h)) for h in grouped["type"].agg(list)]
    return user_item_matrix(items, kinds, index, weights)


@dataclass(frozen=True, eq=False)
class _MatrixModel:
    """Shared parts of the models that score a history's row of X."""

    item_ids: tuple[str, ...]
    weights: EventWeights | None
    trained: npt.NDArray[np.bool_] = field(repr=False)

    @cached_index
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def rows(self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]) -> Any:
        return user_item_matrix(histories, types, self.index, self.weights)

    def finish(self, scores: Any) -> Scores:
        out = np.asarray(scores, dtype=np.float64)
        out[:, ~self.trained] = -np.inf
        return out
