"""Strong non-neural baselines, fitted on a split's training events, tuned on validation.

Every baseline is an :data:`streamrec.engine.offline.evaluation.Recommender`:
``recommend(histories, types)
-> (u, n)`` scores over the columns ``item_ids``. A user is known only through the history
passed in, the same input our model gets; the factor and neighbour models turn it into a row
of the user-item matrix exactly as the training rows are built (fold-in).

User-item matrix X (m, n): ``X[u, i]`` is the largest event-type weight
(:class:`streamrec.engine.serving.user_embedding.EventWeights`: view 1, click 2, add_to_cart 3,
purchase 4)
among u's events on i; ``weights=None`` makes it binary. Items with no training event score
-inf (never recommended) in the kNN, EASE and ALS models.

* :class:`RecentPopularityRecommender`: interaction counts in the last ``window_days`` of
  the training period (ending at its last event); ties broken by all-time counts.
* :class:`ItemKNNRecommender`: cosine similarity of the item columns of X; each item keeps
  its ``k`` most similar items; ``score(u, i) = sum_j x_uj * s_ji``.
* :class:`EASERecommender` (Steck, 2019): ``B = I - P / diag(P)`` (column j divided by
  ``P_jj``), ``P = (XᵀX + λI)⁻¹``, so ``diag(B) = 0``; ``score(u) = x_u B``.

Implicit ALS, the one baseline with an optional dependency, is in
:mod:`streamrec.engine.offline.als`.

Example:
    >>> knn = ItemKNNRecommender.fit(split.train, items, k=50)  # doctest: +SKIP
    >>> evaluate_full_ranking(knn, split, items)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from streamrec.engine.serving.user_embedding import EventWeights

__all__ = [
    "EASERecommender",
    "ItemKNNRecommender",
    "RecentPopularityRecommender",
    "Scores",
    "finish_scores",
    "fit_matrix",
    "item_cosine_top_k",
    "user_item_matrix",
]

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_BLOCK = 1024
Scores = npt.NDArray[np.float64]


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


def fit_matrix(
    events: pd.DataFrame, item_ids: Sequence[str], weights: EventWeights | None
) -> tuple[tuple[str, ...], dict[str, int], sp.csr_matrix, npt.NDArray[np.bool_]]:
    """Columns, column index, training X (users sorted by id) and which items have events.

    Args:
        events: Training events.
        item_ids: The n items, in column order.
        weights: Event-type weights of X, or None for binary.

    Returns:
        ``(item_ids, index, X (m, n) CSR, trained (n,))``.

    Raises:
        ValueError: No events.
    """
    if events.empty:
        msg = "events must not be empty to fit a baseline"
        raise ValueError(msg)
    ids = tuple(str(i) for i in item_ids)
    index = {item: i for i, item in enumerate(ids)}
    x = _training_matrix(events, index, weights)
    trained = np.asarray(x.getnnz(axis=0) > 0, dtype=np.bool_)
    return ids, index, x, trained


def finish_scores(scores: Any, trained: npt.NDArray[np.bool_]) -> Scores:
    """(u, n) dense float64 copy of ``scores`` with -inf where ``trained`` is False."""
    out: Scores = np.array(scores.toarray() if sp.issparse(scores) else scores, dtype=np.float64)
    out[:, ~trained] = -np.inf
    return out


@dataclass(frozen=True, eq=False)
class RecentPopularityRecommender:
    """Most interactions in the last ``window_days`` of training; same list for everyone.

    Attributes:
        item_ids: The items, in score-column order.
        scores: (n,) recent count plus ``all-time count / (max all-time count + 1)``, so
            all-time popularity only breaks ties.
        window_days: Length of the window, ending at the last training event.
    """

    item_ids: tuple[str, ...]
    scores: Scores = field(repr=False)
    window_days: float = 7.0

    @classmethod
    def fit(
        cls, events: pd.DataFrame, item_ids: Sequence[str], window_days: float = 7.0
    ) -> RecentPopularityRecommender:
        """Count the events of the window and of all time.

        Args:
            events: Training events.
            item_ids: The items to score, in column order.
            window_days: Window length in days.

        Returns:
            The baseline.

        Raises:
            ValueError: No events, or a non-positive window.
        """
        if events.empty or not window_days > 0:
            msg = f"need events and window_days > 0, got {len(events)} events, {window_days!r}"
            raise ValueError(msg)
        ids = tuple(str(i) for i in item_ids)
        end = int(events["ts"].max())
        recent = events[events["ts"] > end - window_days * _DAY_MS]

        def counts(frame: pd.DataFrame) -> Scores:
            per_item = frame["item_id"].astype(str).value_counts()
            return np.asarray(per_item.reindex(list(ids), fill_value=0), dtype=np.float64)

        total = counts(events)
        scores = counts(recent) + total / (float(total.max(initial=0.0)) + 1.0)
        return cls(item_ids=ids, scores=scores, window_days=window_days)

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> Scores:
        """(u, n) scores, the same for every user."""
        return np.tile(self.scores, (len(histories), 1))


def item_cosine_top_k(x: sp.spmatrix, k: int) -> sp.csr_matrix:
    """Cosine similarity of X's columns, keeping each item's k most similar other items.

    Args:
        x: (m, n) user-item matrix.
        k: Neighbours kept per row (only positive similarities).

    Returns:
        (n, n) CSR ``S`` with ``S[j, i] = cos(x_j, x_i)`` for the top k i of each j, zero
        diagonal.
    """
    xc = sp.csc_matrix(x, dtype=np.float64)
    norms = np.sqrt(np.asarray(xc.multiply(xc).sum(axis=0)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    xn = sp.csc_matrix(xc @ sp.diags(inv))
    xt = sp.csr_matrix(xn.T)
    n = xc.shape[1]
    keep = min(k, n)
    rows: list[npt.NDArray[np.intp]] = []
    cols: list[npt.NDArray[np.intp]] = []
    vals: list[Scores] = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = np.asarray((xt[start:stop] @ xn).toarray(), dtype=np.float64)
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = np.argpartition(-block, keep - 1, axis=1)[:, :keep] if keep < n else None
        idx = np.broadcast_to(np.arange(n), block.shape) if top is None else top
        picked = np.take_along_axis(block, idx, axis=1)
        positive = picked > 0
        rows.append(np.nonzero(positive)[0] + start)
        cols.append(idx[positive])
        vals.append(picked[positive])
    coo = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return sp.csr_matrix(coo)


@dataclass(frozen=True, eq=False)
class ItemKNNRecommender:
    """Item-item kNN on cosine similarity; scores sum the history items' similarities.

    Attributes:
        item_ids: The items, in score-column order.
        index: Column of each item.
        similarity: (n, n) top-k cosine similarities (see :func:`item_cosine_top_k`).
        trained: (n,) items with training events.
        weights: Event-type weights of X (None: binary).
        k: Neighbours per item.
    """

    item_ids: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False)
    similarity: sp.csr_matrix = field(repr=False)
    trained: npt.NDArray[np.bool_] = field(repr=False)
    weights: EventWeights | None
    k: int

    @classmethod
    def fit(
        cls,
        events: pd.DataFrame,
        item_ids: Sequence[str],
        k: int = 50,
        weights: EventWeights | None = None,
    ) -> ItemKNNRecommender:
        """Build X from the training events and keep each item's k nearest items.

        Args:
            events: Training events.
            item_ids: The items to score, in column order.
            k: Neighbours per item, >= 1.
            weights: Event-type weights of X, or None for binary.

        Returns:
            The baseline.

        Raises:
            ValueError: No events or k < 1.
        """
        if k < 1:
            msg = f"k must be >= 1, got {k!r}"
            raise ValueError(msg)
        ids, index, x, trained = fit_matrix(events, item_ids, weights)
        return cls(ids, index, item_cosine_top_k(x, k), trained, weights, k)

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> Scores:
        """(u, n) scores ``x_u S``; -inf for items without training events."""
        rows = user_item_matrix(histories, types, self.index, self.weights)
        return finish_scores(rows @ self.similarity, self.trained)


@dataclass(frozen=True, eq=False)
class EASERecommender:
    """EASE: a closed-form item-item linear model with a zero diagonal.

    Attributes:
        item_ids: The items, in score-column order.
        index: Column of each item.
        b: (n, n) item-item weights.
        trained: (n,) items with training events.
        weights: Event-type weights of X (None: binary).
        lam: The L2 penalty λ.
    """

    item_ids: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False)
    b: Scores = field(repr=False)
    trained: npt.NDArray[np.bool_] = field(repr=False)
    weights: EventWeights | None
    lam: float

    @staticmethod
    def closed_form(gram: npt.NDArray[np.floating], lam: float) -> Scores:
        """``B = I - P / diag(P)`` with ``P = (G + λI)⁻¹``: (n, n) -> (n, n).

        Args:
            gram: (n, n) ``XᵀX``.
            lam: λ > 0.

        Returns:
            (n, n) B with ``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal, 0 on it.
        """
        g = np.array(gram, dtype=np.float64)
        g[np.diag_indices_from(g)] += lam
        p = np.linalg.inv(g)
        b: Scores = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        return b

    @classmethod
    def fit(
        cls,
        events: pd.DataFrame,
        item_ids: Sequence[str],
        lam: float = 250.0,
        weights: EventWeights | None = None,
        max_items: int = 20_000,
    ) -> EASERecommender:
        """Solve EASE on the training events' X.

        Args:
            events: Training events.
            item_ids: The items to score, in column order.
            lam: λ > 0.
            weights: Event-type weights of X, or None for binary.
            max_items: Refuse larger catalogs (n² memory, n³ time).

        Returns:
            The baseline.

        Raises:
            ValueError: No events, λ <= 0, or more than ``max_items`` items.
        """
        if not lam > 0:
            msg = f"lam must be > 0, got {lam!r}"
            raise ValueError(msg)
        if len(item_ids) > max_items:
            msg = f"EASE needs an (n, n) inverse; n={len(item_ids)} exceeds max_items={max_items}"
            raise ValueError(msg)
        ids, index, x, trained = fit_matrix(events, item_ids, weights)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
        return cls(ids, index, cls.closed_form(gram, lam), trained, weights, lam)

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> Scores:
        """(u, n) scores ``x_u B``; -inf for items without training events."""
        rows = user_item_matrix(histories, types, self.index, self.weights)
        return finish_scores(rows @ self.b, self.trained)
