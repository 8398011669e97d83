"""The learned second stage: re-rank the retrieved candidates with features of each
(user, candidate) pair. Pure.

Candidates are the ``candidates`` best items by the model's score among the items the user
has not seen (the ANN search online, the same items offline). Each gets
:data:`FEATURES`:

====================  ==========================================================
``score``             the model's score (inner product, popularity prior included)
``log_rank``          ``log1p`` of its rank among the candidates (0 = best)
``popularity``        normalised log popularity in the training log
``co_max``            ``log1p`` of its largest co-occurrence count with one of the
                      user's last ``session`` items
``co_last``           ``log1p`` of its co-occurrence count with the user's last item
``co_sum``            ``log1p`` of the sum of those counts
``category_share``    share of the user's last ``category_window`` items in its
                      category (0 for an item without one)
====================  ==========================================================

Co-occurrence counts come from :class:`CoTable`, built from the training events with the
online statistics' definition (:func:`engine.item_stats.cooccurrence_pairs`, "viewed
together") and shipped inside the model, so offline and online features are the same
numbers. The scorer is linear over standardised features, trained with a listwise softmax
loss on held-out next events (:func:`train_ranker`); it is kept only when it beats the
model's own order on users it was not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.item_stats import cooccurrence_pairs
from engine.types import Interaction

__all__ = [
    "CANDIDATES",
    "CATEGORY_WINDOW",
    "FEATURES",
    "SESSION",
    "CoTable",
    "LinearRanker",
    "RankerReport",
    "candidate_features",
    "rerank_scores",
    "train_ranker",
]

FEATURES: tuple[str, ...] = (
    "score",
    "log_rank",
    "popularity",
    "co_max",
    "co_last",
    "co_sum",
    "category_share",
)

FloatArray = npt.NDArray[np.float64]

#: How many of the best unseen items the ranker re-orders.
CANDIDATES = 100
#: How many of the user's last items the co-occurrence features look at.
SESSION = 5
#: How many of the user's last items the category share counts.
CATEGORY_WINDOW = 20


@dataclass(frozen=True, eq=False)
class CoTable:
    """Each item's most frequent co-occurring items (row ids) and counts.

    Attributes:
        partners: (n, m) partner rows, -1 padded, most frequent first.
        counts: (n, m) their counts (0 for padding).
    """

    partners: npt.NDArray[np.int32] = field(repr=False)
    counts: npt.NDArray[np.int32] = field(repr=False)

    @classmethod
    def build(
        cls,
        sequences: Sequence[tuple[Sequence[int] | npt.NDArray[np.integer], Sequence[str]]],
        n_items: int,
        *,
        window: int = 5,
        max_partners: int = 50,
    ) -> CoTable:
        """Count "viewed together" pairs over each user's time-ordered rows and types
        exactly as the online counter does, and keep each item's ``max_partners`` most
        frequent partners (ties: the smaller row first)."""
        pairs: dict[tuple[int, int], int] = {}
        for rows, kinds in sequences:
            previous: list[Interaction] = []
            for row, kind in zip(rows, kinds, strict=True):
                for other in cooccurrence_pairs(str(row), kind, previous[-window:], window).viewed:
                    a, b = int(row), int(other)
                    pairs[(a, b)] = pairs.get((a, b), 0) + 1
                    pairs[(b, a)] = pairs.get((b, a), 0) + 1
                previous.append(Interaction(str(row), kind, 0))  # type: ignore[arg-type]
        by_item: dict[int, list[tuple[int, int]]] = {}
        for (a, b), count in pairs.items():
            by_item.setdefault(a, []).append((b, count))
        partners = np.full((n_items, max_partners), -1, dtype=np.int32)
        counts = np.zeros((n_items, max_partners), dtype=np.int32)
        for a, found in by_item.items():
            found.sort(key=lambda bc: (-bc[1], bc[0]))
            top = found[:max_partners]
            partners[a, : len(top)] = [b for b, _ in top]
            counts[a, : len(top)] = [c for _, c in top]
        return cls(partners, counts)

    def counts_with(self, item: int, candidates: npt.NDArray[np.intp]) -> npt.NDArray[np.int32]:
        """(c,) count of each candidate row with ``item`` (0 where not a kept partner)."""
        out = np.zeros(len(candidates), dtype=np.int32)
        if item < 0 or item >= len(self.partners):
            return out
        lookup = dict(zip(self.partners[item].tolist(), self.counts[item].tolist(), strict=True))
        lookup.pop(-1, None)
        if lookup:
            out[:] = [lookup.get(int(c), 0) for c in candidates]
        return out


def candidate_features(
    scores: npt.NDArray[np.floating],
    candidates: npt.NDArray[np.intp],
    candidate_categories: Sequence[str],
    popularity: npt.NDArray[np.floating],
    history: Sequence[int],
    history_categories: Sequence[str],
    table: CoTable,
    *,
    session: int = SESSION,
    category_window: int = CATEGORY_WINDOW,
) -> FloatArray:
    """(c, len(FEATURES)) features of one user's candidates; the same call offline and
    online.

    Args:
        scores: (c,) the model's scores of the candidates, best first.
        candidates: (c,) their model rows (-1 for items indexed from their text).
        candidate_categories: (c,) their categories ("" for none).
        popularity: (c,) their normalised log popularity.
        history: The user's recent item rows, oldest first (-1 for items without one).
        history_categories: The matching categories.
        table: The co-occurrence table.
        session: How many of the last history items the co-occurrence features use.
        category_window: How many of the last history items the category share counts.
    """
    c = len(candidates)
    out = np.zeros((c, len(FEATURES)), dtype=np.float64)
    out[:, 0] = scores
    out[:, 1] = np.log1p(np.arange(c))
    out[:, 2] = popularity
    last = list(history[-session:])
    if last and c:
        per_item = np.stack([table.counts_with(row, candidates) for row in last])
        out[:, 3] = np.log1p(per_item.max(axis=0))
        out[:, 4] = np.log1p(per_item[-1])
        out[:, 5] = np.log1p(per_item.sum(axis=0))
    recent = list(history_categories[-category_window:])
    if recent:
        counts: dict[str, int] = {}
        for cat in recent:
            counts[cat] = counts.get(cat, 0) + 1
        out[:, 6] = [
            counts.get(cat, 0) / len(recent) if cat else 0.0 for cat in candidate_categories
        ]
    return out


@dataclass(frozen=True, eq=False)
class LinearRanker:
    """``score = ((features - mean) / std) @ weights`` over :data:`FEATURES`.

    Attributes:
        weights: (f,) learned weights.
        mean: (f,) feature means on the training users.
        std: (f,) feature standard deviations (1 where constant).
        candidates: How many candidates it re-ranks.
        session: Session items the co-occurrence features look at.
        category_window: Recent items the category share counts.
    """

    weights: FloatArray = field(repr=False)
    mean: FloatArray = field(repr=False)
    std: FloatArray = field(repr=False)
    candidates: int = CANDIDATES
    session: int = SESSION
    category_window: int = CATEGORY_WINDOW

    def __post_init__(self) -> None:
        f = len(FEATURES)
        for name in ("weights", "mean", "std"):
            value = getattr(self, name)
            if value.shape != (f,) or not np.all(np.isfinite(value)):
                msg = f"LinearRanker.{name} must be {f} finite numbers, got {value!r}"
                raise ValueError(msg)
        if self.candidates < 1 or self.session < 1 or self.category_window < 1:
            msg = "LinearRanker candidates, session and category_window must be >= 1"
            raise ValueError(msg)

    def score(self, features: FloatArray) -> FloatArray:
        """(c,) learned scores of (c, f) features."""
        z = (features - self.mean) / self.std
        scored: FloatArray = z @ self.weights
        return scored

    def params(self) -> dict[str, int]:
        return {
            "candidates": self.candidates,
            "session": self.session,
            "category_window": self.category_window,
        }

    def arrays(self) -> dict[str, FloatArray]:
        return {"ranker.weights": self.weights, "ranker.mean": self.mean, "ranker.std": self.std}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, npt.NDArray[np.floating]], params: Mapping[str, int]
    ) -> LinearRanker:
        return cls(
            np.asarray(arrays["ranker.weights"], dtype=np.float64),
            np.asarray(arrays["ranker.mean"], dtype=np.float64),
            np.asarray(arrays["ranker.std"], dtype=np.float64),
            **{k: int(v) for k, v in params.items()},
        )


def rerank_scores(ranker: LinearRanker, features: FloatArray) -> FloatArray:
    """The order the ranker gives: (c,) scores, ties kept in candidate order."""
    scores = ranker.score(features)
    # A tiny rank-based tie-break keeps equal scores in the model's order, deterministically.
    return scores - 1e-9 * np.arange(len(scores))


@dataclass(frozen=True)
class RankerReport:
    """How the ranker was judged.

    Attributes:
        used: Whether it beat the model's order on the held-out users.
        base_ndcg: NDCG@10 of the model's order on the held-out users.
        ranker_ndcg: NDCG@10 of the ranker trained on the other users.
        weights: The final weights by feature name (fit on all users), or empty.
        reachable: Share of users whose target was among the candidates.
    """

    used: bool
    base_ndcg: float
    ranker_ndcg: float
    weights: Mapping[str, float]
    reachable: float


def _ndcg_at_10(scores: FloatArray, target: int) -> float:
    if target < 0:
        return 0.0
    rank = int((scores > scores[target]).sum())
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


def _fit(
    features: Sequence[FloatArray], targets: Sequence[int], l2: float, seed: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    import torch

    torch.manual_seed(seed)
    stacked = np.concatenate(features)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    # Users may have fewer candidates than others: pad, and mask the padding out.
    widest = max(len(f) for f in features)
    padded = np.zeros((len(features), widest, len(FEATURES)))
    real = np.zeros((len(features), widest), dtype=bool)
    for i, f in enumerate(features):
        padded[i, : len(f)] = (f - mean) / std
        real[i, : len(f)] = True
    x = torch.tensor(padded, dtype=torch.float64)
    mask = torch.tensor(real)
    y = torch.tensor(list(targets), dtype=torch.long)
    w = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = (x @ w).masked_fill(~mask, -torch.inf)
        loss = torch.nn.functional.cross_entropy(logits, y) + l2 * (w**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return w.detach().numpy().astype(np.float64), mean, std


def train_ranker(
    features: Sequence[FloatArray],
    targets: Sequence[int],
    *,
    candidates: int = CANDIDATES,
    session: int = SESSION,
    category_window: int = CATEGORY_WINDOW,
    l2: float = 1e-3,
    seed: int = 0,
) -> tuple[LinearRanker | None, RankerReport]:
    """Train on half of the users, judge on the other half, refit on all if it helps.

    Args:
        features: Per user, (c, f) features of their candidates (best model score first).
        targets: Per user, the position of their held-out item among the candidates
            (-1: not a candidate; such users count as misses for both orders and do not
            train).
        candidates, session, category_window: Recorded in the ranker (the feature
            settings used to compute ``features``).
        l2: L2 penalty of the weights.
        seed: Seeds the split of the users.

    Returns:
        ``(ranker or None, report)``: None when it does not beat the model's order on
        the held-out half (then the model's order is served).
    """
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    half_a, half_b = order[: n // 2], order[n // 2 :]
    trainable_a = [i for i in half_a if targets[i] >= 0]
    reachable = float(np.mean([t >= 0 for t in targets])) if n else 0.0
    if len(trainable_a) < 10 or not len(half_b):
        return None, RankerReport(False, math.nan, math.nan, {}, reachable)
    w, mean, std = _fit(
        [features[i] for i in trainable_a], [targets[i] for i in trainable_a], l2, seed
    )
    judge = LinearRanker(w, mean, std, candidates, session, category_window)
    base = float(
        np.mean(
            [_ndcg_at_10(-np.arange(len(features[i]), dtype=float), targets[i]) for i in half_b]
        )
    )
    learned = float(
        np.mean([_ndcg_at_10(rerank_scores(judge, features[i]), targets[i]) for i in half_b])
    )
    if learned <= base:
        return None, RankerReport(False, base, learned, {}, reachable)
    trainable = [i for i in range(n) if targets[i] >= 0]
    w, mean, std = _fit([features[i] for i in trainable], [targets[i] for i in trainable], l2, seed)
    ranker = LinearRanker(w, mean, std, candidates, session, category_window)
    named = {name: float(v) for name, v in zip(FEATURES, w, strict=True)}
    return ranker, RankerReport(True, base, learned, named, reachable)
