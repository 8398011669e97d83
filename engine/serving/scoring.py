"""Scores of candidate items for one user: cosine similarity plus a popularity prior.

Used offline (evaluation, tuning) and online (re-ranking the candidates the index returns),
so both paths score items identically.

``score = cos(user, item) + popularity_weight * normalised_log_popularity(item)``

The popularity term is ``log1p(count) / log1p(max count)`` over the whole model, so it lies in
[0, 1] and a subset of items (the index's candidates) is scored exactly as in a full ranking.

Example:
    >>> import numpy as np
    >>> items = np.eye(2, dtype=np.float32)
    >>> pop = normalised_log_popularity(np.array([0.0, 9.0]))
    >>> score_items(items[0], items, pop, ScoringParams(popularity_weight=0.5)).tolist()
    [1.0, 0.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ScoringParams",
    "augment_items",
    "augment_user",
    "normalised_log_popularity",
    "score_items",
    "score_items_batch",
]


@dataclass(frozen=True)
class ScoringParams:
    """Parameters of the scoring function; chosen on a validation split by training.

    Attributes:
        popularity_weight: Weight of the normalised log popularity next to the cosine
            similarity (which lies in [-1, 1]); 0 turns the prior off.
    """

    popularity_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.popularity_weight) and self.popularity_weight >= 0.0):
            msg = (
                "ScoringParams.popularity_weight must be a finite number >= 0, "
                f"got {self.popularity_weight!r}"
            )
            raise ValueError(msg)


def normalised_log_popularity(counts: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """``log1p(count) / log1p(max count)``: item popularity squeezed into [0, 1].

    Args:
        counts: (n,) interaction counts, >= 0.

    Returns:
        (n,) float32 in [0, 1]; all zeros when every count is 0.

    Raises:
        ValueError: A count is negative or not finite.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        msg = f"counts must have shape (n,), got shape {c.shape}"
        raise ValueError(msg)
    if c.size and not (np.all(np.isfinite(c)) and float(c.min()) >= 0.0):
        msg = "counts must be finite and >= 0"
        raise ValueError(msg)
    logs = np.log1p(c)
    top = float(logs.max()) if logs.size else 0.0
    if top <= 0.0:
        return np.zeros(c.shape, dtype=np.float32)
    return (logs / top).astype(np.float32)


def score_items_batch(
    user_vecs: npt.NDArray[np.floating],
    item_vectors: npt.NDArray[np.floating],
    log_popularity: npt.NDArray[np.floating],
    params: ScoringParams,
) -> npt.NDArray[np.float32]:
    """Scores of every item for a batch of users; see :func:`score_items`.

    Args:
        user_vecs: (u, d) unit-norm (or zero) user vectors.
        item_vectors: (n, d) unit-norm (or zero) item vectors.
        log_popularity: (n,) from :func:`normalised_log_popularity`.
        params: Scoring parameters.

    Returns:
        (u, n) float32 scores. A user whose vector is zero (no usable history) gets the
        popularity term alone (plain popularity ranking), whatever ``popularity_weight`` is.
    """
    users = np.asarray(user_vecs, dtype=np.float32)
    items = np.asarray(item_vectors, dtype=np.float32)
    pop = np.asarray(log_popularity, dtype=np.float32)
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        msg = (
            "user_vecs and item_vectors must have shapes (u, d) and (n, d), "
            f"got {users.shape} and {items.shape}"
        )
        raise ValueError(msg)
    if pop.shape != (items.shape[0],):
        msg = f"log_popularity must have shape ({items.shape[0]},), got {pop.shape}"
        raise ValueError(msg)
    scores: npt.NDArray[np.float32] = users @ items.T
    if params.popularity_weight > 0.0:
        scores += np.float32(params.popularity_weight) * pop[None, :]
    cold = ~np.any(users != 0.0, axis=1)
    if np.any(cold):
        scores[cold] = pop[None, :]
    return scores


def score_items(
    user_vec: npt.NDArray[np.floating],
    item_vectors: npt.NDArray[np.floating],
    log_popularity: npt.NDArray[np.floating],
    params: ScoringParams,
) -> npt.NDArray[np.float32]:
    """Scores of items for one user: cosine similarity plus the weighted popularity prior.

    Vectors are expected to be unit-norm (as
    :func:`streamrec.engine.serving.user_embedding.user_embedding`
    and the trained model produce them), so the dot product is the cosine similarity.

    Args:
        user_vec: (d,) the user's vector.
        item_vectors: (n, d) the candidates' vectors.
        log_popularity: (n,) the candidates' entries of :func:`normalised_log_popularity`
            computed over the whole catalog.
        params: Scoring parameters.

    Returns:
        (n,) float32 scores, higher is better. A zero user vector (cold user) gets the
        popularity term alone.
    """
    user = np.asarray(user_vec, dtype=np.float32)
    if user.ndim != 1:
        msg = f"user_vec must have shape (d,), got shape {user.shape}"
        raise ValueError(msg)
    scores: npt.NDArray[np.float32] = score_items_batch(
        user[None, :], item_vectors, log_popularity, params
    )[0]
    return scores


def augment_items(
    item_vectors: npt.NDArray[np.floating],
    log_popularity: npt.NDArray[np.floating],
    params: ScoringParams,
) -> npt.NDArray[np.float32]:
    """Item vectors for the index, with the popularity prior as one extra coordinate.

    ``augment_user(u) @ augment_items(V, pop, params).T == score_items(u, V, pop, params)``
    for any non-zero user, so a maximum-inner-product index returns candidates in exactly
    the order of the full scoring function (no re-ranking gap between ANN and scoring).

    Args:
        item_vectors: (n, d) unit-norm (or zero) item vectors.
        log_popularity: (n,) from :func:`normalised_log_popularity`.
        params: Scoring parameters.

    Returns:
        (n, d + 1) float32.
    """
    items = np.asarray(item_vectors, dtype=np.float32)
    pop = np.asarray(log_popularity, dtype=np.float32).reshape(-1, 1)
    if items.ndim != 2 or pop.shape[0] != items.shape[0]:
        msg = f"expected (n, d) vectors and (n,) popularity, got {items.shape} and {pop.shape}"
        raise ValueError(msg)
    extra = np.float32(params.popularity_weight) * pop
    return np.ascontiguousarray(np.hstack([items, extra]), dtype=np.float32)


def augment_user(user_vecs: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """User vectors for querying an :func:`augment_items` index: (u, d) -> (u, d + 1)."""
    users = np.atleast_2d(np.asarray(user_vecs, dtype=np.float32))
    ones = np.ones((users.shape[0], 1), dtype=np.float32)
    return np.ascontiguousarray(np.hstack([users, ones]), dtype=np.float32)
