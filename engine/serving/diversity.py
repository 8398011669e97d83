"""Maximal marginal relevance (Carbonell & Goldstein 1998): trade score for variety.

Greedy: the next item maximises ``(1 - w) * relevance - w * max cosine to the items
already chosen``, where relevance is the candidate's score scaled to [0, 1] over the pool.
With ``w == 0`` the result is exactly the score order, so diversity is strictly opt-in and
an undiversified list equals the offline full ranking.

Example:
    >>> mmr_order(np.array([3.0, 2.9, 1.0]), np.eye(3, dtype=np.float32), k=2, weight=0.5)
    [0, 1]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["mmr_order"]


def mmr_order(
    scores: npt.NDArray[np.floating],
    vectors: npt.NDArray[np.floating],
    k: int,
    weight: float,
) -> list[int]:
    """Positions of ``k`` candidates in MMR order.

    Args:
        scores: (m,) candidate scores, any scale (higher is better).
        vectors: (m, d) candidate vectors; cosine similarity is taken between them (zero
            vectors count as dissimilar to everything).
        k: How many to pick (at most m).
        weight: Diversity weight w in [0, 1]; 0 keeps the score order.

    Returns:
        Up to ``k`` positions into ``scores``, in pick order.

    Raises:
        ValueError: ``weight`` outside [0, 1], or shapes that do not match.
    """
    if not 0.0 <= weight <= 1.0:
        msg = f"diversity weight must be in [0, 1], got {weight}"
        raise ValueError(msg)
    s = np.asarray(scores, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    if s.ndim != 1 or v.ndim != 2 or v.shape[0] != s.shape[0]:
        msg = f"expected (m,) scores and (m, d) vectors, got {s.shape} and {v.shape}"
        raise ValueError(msg)
    k = min(k, s.size)
    if weight == 0.0 or k <= 1:
        return [int(i) for i in np.argsort(-s, kind="stable")[:k]]
    span = float(s.max() - s.min())
    relevance = (s - s.min()) / span if span > 0 else np.ones_like(s)
    norms = np.linalg.norm(v, axis=1)
    unit = np.divide(v, norms[:, None], out=np.zeros_like(v), where=norms[:, None] > 0)
    closest = np.full(s.size, -np.inf)  # max cosine to the chosen items so far
    picked: list[int] = []
    available = np.ones(s.size, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = (1.0 - weight) * relevance - weight * penalty
        value[~available] = -np.inf
        best = int(np.argmax(value))
        picked.append(best)
        available[best] = False
        closest = np.maximum(closest, unit @ unit[best])
    return picked
