"""Per-user online adaptation: one logistic-loss gradient step per event. Pure.

The co-occurrence user vector ``q`` (:mod:`engine.user_embedding`) says what a user's
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
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AdaptationParams", "adaptation"]


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
            (:func:`engine.user_embedding.history_weights`); the vector before event
            ``t`` is the normalised weighted sum of events ``< t`` (a common factor of
            the weights does not change it).
        params: The step.

    Returns:
        (d,) float32; zeros when the adaptation is off or the history is empty.
    """
    v = np.asarray(vectors, dtype=np.float64)
    h, d = v.shape
    r = np.zeros(d, dtype=np.float64)
    if not params.enabled or h == 0:
        return r.astype(np.float32)
    w = np.asarray(weights, dtype=np.float64)
    before = np.zeros_like(v)
    before[1:] = np.cumsum(w[:-1, None] * v[:-1], axis=0)
    norms = np.linalg.norm(before, axis=1)
    base = np.einsum("td,td->t", before, v) / np.where(norms > 0.0, norms, 1.0)
    lr, decay, sharp = params.learning_rate, params.decay, params.sharpness
    for t in range(h):
        margin = base[t] + float(r @ v[t])
        r *= decay
        r += (lr / (1.0 + math.exp(sharp * margin))) * v[t]  # lr * (1 - sigmoid)
    return r.astype(np.float32)
