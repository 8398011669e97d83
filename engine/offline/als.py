"""Implicit-feedback ALS baseline, from PyPI's ``implicit`` (optional: ``pip install '.[eval]'``).

Hu, Koren & Volinsky (2008): factor the user-item matrix X (see
:func:`streamrec.engine.offline.baselines.user_item_matrix`) with confidence ``c = alpha * x`` on
observed
entries and 1 elsewhere. Always implicit's CPU model (``implicit.cpu.als``), seeded, with the
BLAS thread pool held at one thread while it runs (implicit's own advice; its OpenMP threads
do the parallel work). A history's user factors are implicit's exact least-squares user step
on the history's row (``recalculate_user``): the same step training takes for a user.

Errors::

    BaselineUnavailableError (RuntimeError)   implicit (or threadpoolctl) is not installed

Example:
    >>> als = ALSRecommender.fit(split.train, items, factors=64, seed=0)  # doctest: +SKIP
    >>> evaluate_full_ranking(als, split, items)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.baselines import Scores, finish_scores, fit_matrix, user_item_matrix
from streamrec.engine.serving.user_embedding import EventWeights

__all__ = ["ALSRecommender", "BaselineUnavailableError", "load_implicit"]


class BaselineUnavailableError(RuntimeError):
    """A baseline's optional dependency is not installed."""


def load_implicit() -> tuple[ModuleType, ModuleType]:
    """``(implicit.cpu.als, threadpoolctl)``, imported on first use.

    Raises:
        BaselineUnavailableError: Either package cannot be imported.
    """
    try:
        als = importlib.import_module("implicit.cpu.als")
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError as exc:
        msg = f"the ALS baseline needs `pip install implicit` ({exc})"
        raise BaselineUnavailableError(msg) from exc
    return als, threadpoolctl


@dataclass(frozen=True, eq=False)
class ALSRecommender:
    """Implicit ALS item factors; users folded in from their history.

    Attributes:
        item_ids: The items, in score-column order.
        index: Column of each item.
        trained: (n,) items with training events.
        weights: Event-type weights of X (None: binary).
        params: ``factors``, ``regularization``, ``iterations``, ``alpha``, ``seed``.
        model: The fitted ``implicit.cpu.als.AlternatingLeastSquares``.
    """

    item_ids: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False)
    trained: npt.NDArray[np.bool_] = field(repr=False)
    weights: EventWeights | None
    params: Mapping[str, float]
    model: Any = field(repr=False)

    @classmethod
    def fit(
        cls,
        events: pd.DataFrame,
        item_ids: Sequence[str],
        *,
        factors: int = 64,
        regularization: float = 0.1,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = 0,
        weights: EventWeights | None = None,
        num_threads: int = 0,
    ) -> ALSRecommender:
        """Factorise the training events' X.

        Args:
            events: Training events.
            item_ids: The n items to score, in column order.
            factors: Latent dimension f.
            regularization: L2 penalty.
            iterations: ALS sweeps.
            alpha: Confidence scale.
            seed: Seeds the initial factors; equal seeds and inputs give equal factors.
            weights: Event-type weights of X, or None for binary.
            num_threads: implicit's OpenMP threads (0: all cores).

        Returns:
            The baseline.

        Raises:
            BaselineUnavailableError: implicit is not installed.
            ValueError: No events or a non-positive parameter.
        """
        if min(factors, iterations) < 1 or not (regularization >= 0 and alpha > 0):
            msg = (
                "ALS needs factors >= 1, iterations >= 1, regularization >= 0, alpha > 0; got "
                f"{factors}, {iterations}, {regularization}, {alpha}"
            )
            raise ValueError(msg)
        als, threadpoolctl = load_implicit()
        ids, index, x, trained = fit_matrix(events, item_ids, weights)
        with threadpoolctl.threadpool_limits(1, "blas"):
            model = als.AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                num_threads=num_threads,
                random_state=seed,
            )
            model.fit(x, show_progress=False)
        params = {
            "factors": float(factors),
            "regularization": float(regularization),
            "iterations": float(iterations),
            "alpha": float(alpha),
            "seed": float(seed),
        }
        return cls(ids, index, trained, weights, params, model)

    @property
    def item_factors(self) -> npt.NDArray[np.float32]:
        """(n, f) item factors."""
        return np.asarray(self.model.item_factors, dtype=np.float32)

    def user_factors(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        """(u, f) factors of each history (zero for a history with no trained item)."""
        rows = user_item_matrix(histories, types, self.index, self.weights)
        _, threadpoolctl = load_implicit()
        with threadpoolctl.threadpool_limits(1, "blas"):
            users = self.model.recalculate_user(np.arange(len(histories)), rows)
        return np.asarray(users, dtype=np.float32).reshape(len(histories), -1)

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> Scores:
        """(u, n) scores ``U Yᵀ``; -inf for items without training events."""
        users = self.user_factors(histories, types)
        return finish_scores(users.astype(np.float64) @ self.item_factors.T, self.trained)
