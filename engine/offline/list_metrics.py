"""Beyond-accuracy metrics of recommendation lists: intra-list diversity and novelty.

Both take the lists as (u, k) column indices (``EvalResult.top_items`` from
``evaluate_full_ranking(..., keep_top=k)``), best first, -1 for an empty slot, and
average over users whose list can be scored.

* Intra-list diversity (ILD@k): per user, the mean over all pairs of listed items of
  ``1 - cos(v_i, v_j)`` in a given item-vector space. Items without a vector (a zero row)
  take no part in any pair; users with fewer than two such items are left out.
* Novelty@k: per user, the mean over listed items of ``-log2 p_i``, where
  ``p_i = (c_i + 1) / (sum(c) + n)`` is item i's add-one smoothed share of the training
  interactions (so an item never seen in training has a finite, large novelty).
* :func:`ndcg_per_user`: each user's NDCG@k of one held-out target from their list, for
  paired comparisons of two models on the same users.

Example:
    >>> import numpy as np
    >>> top = np.array([[0, 1]])
    >>> float(intra_list_diversity(top, np.eye(2)))
    1.0
    >>> round(float(novelty(top, np.array([1.0, 1.0]))), 3)
    1.0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["intra_list_diversity", "ndcg_per_user", "novelty"]


def _check_lists(top_items: npt.NDArray[np.integer], n: int) -> npt.NDArray[np.intp]:
    lists = np.asarray(top_items, dtype=np.intp)
    if lists.ndim != 2:
        msg = f"top_items must have shape (u, k), got shape {lists.shape}"
        raise ValueError(msg)
    if lists.size and (lists.max() >= n or lists.min() < -1):
        msg = f"top_items must hold columns in [0, {n}) or -1, got {lists.min()}..{lists.max()}"
        raise ValueError(msg)
    return lists


def intra_list_diversity(
    top_items: npt.NDArray[np.integer], vectors: npt.NDArray[np.floating]
) -> float:
    """Mean pairwise cosine distance within each list, averaged over users.

    Args:
        top_items: (u, k) listed columns, -1 for an empty slot.
        vectors: (n, d) item vectors (any norm; zero rows mean "no vector").

    Returns:
        The mean ILD over users with at least two listed items that have a vector; NaN when
        there are none.

    Raises:
        ValueError: The shapes do not fit or a column is out of range.
    """
    vecs = np.asarray(vectors, dtype=np.float64)
    if vecs.ndim != 2:
        msg = f"vectors must have shape (n, d), got shape {vecs.shape}"
        raise ValueError(msg)
    lists = _check_lists(top_items, vecs.shape[0])
    norms = np.linalg.norm(vecs, axis=1)
    unit = np.divide(vecs, norms[:, None], out=np.zeros_like(vecs), where=norms[:, None] > 0)
    has_vec = np.append(norms > 0, False)  # index -1 (empty slot) has none
    listed = unit[np.maximum(lists, 0)] * has_vec[lists][:, :, None]  # (u, k, d)
    m = has_vec[lists].sum(axis=1).astype(np.float64)  # (u,) usable items per list
    summed = listed.sum(axis=1)
    # sum over ordered pairs i != j of cos = |sum v|^2 - sum |v|^2 = |sum v|^2 - m
    pair_cos = (np.einsum("ud,ud->u", summed, summed) - m) / np.maximum(m * (m - 1), 1.0)
    ok = m >= 2
    if not ok.any():
        return float("nan")
    return float(np.mean(1.0 - pair_cos[ok]))


def novelty(top_items: npt.NDArray[np.integer], counts: npt.NDArray[np.floating]) -> float:
    """Mean self-information ``-log2 p_i`` of the listed items, averaged over users.

    Args:
        top_items: (u, k) listed columns, -1 for an empty slot.
        counts: (n,) training interaction counts per column, >= 0.

    Returns:
        The mean novelty over users with at least one listed item; NaN when there are none.

    Raises:
        ValueError: The shapes do not fit, a column is out of range, or a count is negative.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c.size and float(c.min()) < 0.0):
        msg = f"counts must be a (n,) array of counts >= 0, got shape {c.shape}"
        raise ValueError(msg)
    lists = _check_lists(top_items, c.shape[0])
    info = np.append(-np.log2((c + 1.0) / (c.sum() + c.size)), 0.0)  # index -1 -> 0
    filled = lists >= 0
    per_user = filled.sum(axis=1)
    ok = per_user > 0
    if not ok.any():
        return float("nan")
    totals = info[lists].sum(axis=1)
    return float(np.mean(totals[ok] / per_user[ok]))


def ndcg_per_user(
    top_items: npt.NDArray[np.integer], targets: npt.NDArray[np.integer]
) -> npt.NDArray[np.float64]:
    """Each user's ``1 / log2(rank + 2)`` if their target is in their list, else 0.

    Equals the per-user NDCG@k of :func:`streamrec.engine.offline.evaluation.evaluate_full_ranking`
    with
    ``keep_top=k`` (same tie-breaking), so its mean is that ``ndcg@k``.

    Args:
        top_items: (u, k) listed columns, best first, -1 for an empty slot.
        targets: (u,) each user's target column.

    Returns:
        (u,) float64.

    Raises:
        ValueError: The shapes do not fit.
    """
    lists = np.asarray(top_items, dtype=np.intp)
    tgt = np.asarray(targets, dtype=np.intp)
    if lists.ndim != 2 or tgt.shape != (lists.shape[0],):
        msg = f"need top_items (u, k) and targets (u,), got {lists.shape} and {tgt.shape}"
        raise ValueError(msg)
    hit = (lists == tgt[:, None]) & (lists >= 0)
    rank = np.argmax(hit, axis=1).astype(np.float64)
    gain: npt.NDArray[np.float64] = np.where(hit.any(axis=1), 1.0 / np.log2(rank + 2.0), 0.0)
    return gain
