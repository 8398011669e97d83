"""Per-user online adaptation: one logistic-loss gradient step per event. Pure.

The co-occurrence user vector ``q`` (:mod:`streamrec.engine.serving.user_embedding`) says what a
user's
recent items are like. On top of it each user gets an adaptation vector ``r`` in the same
space, learned online: for each event on item ``v_t`` (oldest first), the model's belief
that the user would pick that item is ``sigmoid(sharpness * m_t)`` with margin
``m_t = cos(q_{<t}, v_t) + r · v_t``, where ``q_{<t}`` is the user vector of the events
before ``t``. One step of gradient descent on ``-log sigmoid(sharpness * m_t)`` with weight
decay is::

    r <- decay * r + learning_rate * (1 - sigmoid(sharpness * m_t)) * v_t

so an event the model did not expect (a taste shift: low margin) moves ``r`` a lot, and
one it expected barely moves it. The served query is ``q + r``, which adds ``r · v`` to
every item's score (inner-product search stays exact).

``r`` is a function of the user's last ``max_history`` events (the history the worker keeps
in Redis), recomputed from it on every event: online and offline give the same vector from
the same history (no extra state to lose, replay or forget), and the steps of events older
than the window have decayed by ``decay ** max_history`` when they drop out.
``learning_rate`` 0 (the default) turns the adaptation off; training picks it on validation.

Example:
    >>> import numpy as np
    >>> v = np.eye(3, dtype=np.float32)
    >>> params = AdaptationParams(learning_rate=0.5, decay=0.5, sharpness=4.0)
    >>> r = adaptation(v[[0, 0, 2]], np.ones(3), params)
    >>> bool(r[2] > r[0] > 0.0), float(r[1])
    (True, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AdaptationParams", "adaptation", "adaptations"]

#: Users stepped together by :func:`adaptations`: its (steps, users, d) scratch arrays
#: stay within the CPU's cache (32 users of 50 steps at d=64: 0.8 MB each; a block of 64
#: took three times as long as two of 32 on the 2-core VM).
_BLOCK = 32


@dataclass(frozen=True)
class AdaptationParams:
    """The per-user adaptation's step.

    Attributes:
        learning_rate: Step size; 0 turns the adaptation off.
        decay: Factor applied to ``r`` before each step, in (0, 1].
        sharpness: Scale of the margin inside the sigmoid (cosines lie in [-1, 1]).
    """

    learning_rate: float = 0.0
    decay: float = 0.9
    sharpness: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0.0):
            msg = f"learning_rate must be a finite number >= 0, got {self.learning_rate!r}"
            raise ValueError(msg)
        if not (0.0 < self.decay <= 1.0):
            msg = f"decay must be in (0, 1], got {self.decay!r}"
            raise ValueError(msg)
        if not (math.isfinite(self.sharpness) and self.sharpness > 0.0):
            msg = f"sharpness must be a finite number > 0, got {self.sharpness!r}"
            raise ValueError(msg)

    @property
    def enabled(self) -> bool:
        return self.learning_rate > 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def adaptation(
    vectors: npt.NDArray[np.floating],
    weights: npt.NDArray[np.floating],
    params: AdaptationParams,
) -> npt.NDArray[np.float32]:
    """The user's adaptation vector after one step per event of their history.

    Args:
        vectors: (h, d) item vectors of the history's events, oldest first (the events
            that count for the user vector, unknown items dropped).
        weights: (h,) their weights in the user vector
            (:func:`streamrec.engine.serving.user_embedding.history_weights`); the vector before
            event
            ``t`` is the normalised weighted sum of events ``< t`` (a common factor of
            the weights does not change it).
        params: The step.

    Returns:
        (d,) float32; zeros when the adaptation is off or the history is empty.
    """
    v = np.asarray(vectors)
    out: npt.NDArray[np.float32] = adaptations([v], [weights], params, v.shape[1])[0]
    return out


def adaptations(
    vectors: Sequence[npt.NDArray[np.floating]],
    weights: Sequence[npt.NDArray[np.floating]],
    params: AdaptationParams,
    dim: int,
) -> npt.NDArray[np.float32]:
    """:func:`adaptation` for a batch of users in one pass, stepping all of them together.

    Args:
        vectors: Per user, (h_u, dim) item vectors, oldest first.
        weights: Per user, (h_u,) their weights.
        params: The step.
        dim: The vectors' dimension (the width of the result when the batch is empty).

    Returns:
        (users, dim) float32, row u the same vector as ``adaptation(vectors[u],
        weights[u], params)``.
    """
    users = len(vectors)
    if len(weights) != users:
        msg = f"got {users} users' vectors but {len(weights)} users' weights"
        raise ValueError(msg)
    if not params.enabled:
        return np.zeros((users, dim), dtype=np.float32)
    out = np.zeros((users, dim), dtype=np.float32)
    for start in range(0, users, _BLOCK):
        stop = start + _BLOCK
        out[start:stop] = _adapt_block(vectors[start:stop], weights[start:stop], params, dim)
    return out


def _adapt_block(
    vectors: Sequence[npt.NDArray[np.floating]],
    weights: Sequence[npt.NDArray[np.floating]],
    params: AdaptationParams,
    dim: int,
) -> npt.NDArray[np.float32]:
    users = len(vectors)
    lengths = [len(v) for v in vectors]
    steps = max(lengths, default=0)
    if steps == 0:
        return np.zeros((users, dim), dtype=np.float32)
    # Shorter histories are padded at the start with zero vectors: r stays 0 through a
    # zero step (margin 0, step 0 * v), and zeros change no running sum, so each row's
    # result is that of its own unpadded history. Time-major, so each step is contiguous.
    v = np.zeros((steps, users, dim), dtype=np.float64)
    w = np.zeros((steps, users, 1), dtype=np.float64)
    for u, (vu, wu) in enumerate(zip(vectors, weights, strict=True)):
        if lengths[u]:
            v[steps - lengths[u] :, u] = vu
            w[steps - lengths[u] :, u, 0] = wu
    # Every step's cosine between the weighted sum of the steps before it and its vector.
    weighted = w * v
    before = np.empty_like(v)
    before[0] = 0.0
    for t in range(1, steps):  # a running sum: np.cumsum on this axis is several times slower
        np.add(before[t - 1], weighted[t - 1], out=before[t])
    norms = np.sqrt(np.vecdot(before, before))
    cosines = np.vecdot(before, v) / np.where(norms > 0.0, norms, 1.0)
    lr, decay, sharp = params.learning_rate, params.decay, params.sharpness
    r = np.zeros((users, dim), dtype=np.float64)
    with np.errstate(over="ignore"):  # exp overflow: a sure pick, a step of 0
        for t in range(steps):
            vt = v[t]
            margin = cosines[t] + np.vecdot(r, vt)
            r *= decay
            r += (lr / (1.0 + np.exp(sharp * margin)))[:, None] * vt  # lr * (1 - sigmoid)
    return r.astype(np.float32)
