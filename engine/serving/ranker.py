"""The learned second stage: gather candidates from several sources, then re-rank them with
features of each (user, candidate) pair. Pure.

Candidate sources (:data:`SOURCES`), merged without repeats and ordered by the model's score:

``ann``           the ``candidates`` best unseen items by the model's score (the ANN search
                  online, the same items offline)
``cooccurrence``  the ``co_candidates`` items most often viewed together with the user's last
                  ``session`` items, from the model's :class:`CoTable`
``trending``      the ``trending_candidates`` best-ranked trending items (the online item
                  statistics; offline, trending at the end of the training log)
``fresh``         the ``fresh_candidates`` newest items the model has no row for (indexed
                  from their text; online only)

Each candidate gets :data:`FEATURES`:

=======================  ======================================================
``score``                the model's score (inner product, popularity prior included)
``log_rank``             ``log1p`` of its rank by score among the candidates (0 = best)
``popularity``           normalised log popularity in the training log
``co_max``               ``log1p`` of its largest co-occurrence count with one of the
                         user's last ``session`` items
``co_last``              ``log1p`` of its co-occurrence count with the user's last item
``co_sum``               ``log1p`` of the sum of those counts
``category_share``       share of the user's last ``category_window`` items in its
                         category (0 for an item without one)
``category_recency``     ``1 / (1 + k)`` where k is how many items ago the user last met
                         its category within the window (0: never, or no category)
``price_match``          ``exp(-|log price - median log price of the user's recent items|)``
                         (0 when either is unknown)
``from_ann``, ``from_cooccurrence``, ``from_trending``, ``from_fresh``
                         1 when that source proposed it
=======================  ======================================================

Co-occurrence counts come from :class:`CoTable`, built from the training events with the
online statistics' definition (:func:`streamrec.engine.serving.item_stats.cooccurrence_pairs`,
"viewed
together") and shipped inside the model, so offline and online features are the same
numbers. The scorer is linear over standardised features, trained with a listwise softmax
loss on held-out next events (:func:`train_ranker`); it is kept only when it beats the
model's own order on users it was not trained on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Container, Hashable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.item_stats import cooccurrence_pairs
from streamrec.engine.types import Interaction

__all__ = [
    "CANDIDATES",
    "CATEGORY_WINDOW",
    "CO_CANDIDATES",
    "FEATURES",
    "FRESH_CANDIDATES",
    "SESSION",
    "SOURCES",
    "TRENDING_CANDIDATES",
    "CandidateContext",
    "CoTable",
    "LinearRanker",
    "RankerReport",
    "RankerSettings",
    "merge_sources",
    "rerank_scores",
    "tie_broken",
    "train_ranker",
]

#: Candidate sources, in merge order.
SOURCES: tuple[str, ...] = ("ann", "cooccurrence", "trending", "fresh")

FEATURES: tuple[str, ...] = (
    "score",
    "log_rank",
    "popularity",
    "co_max",
    "co_last",
    "co_sum",
    "category_share",
    "category_recency",
    "price_match",
    *(f"from_{s}" for s in SOURCES),
)

FloatArray = npt.NDArray[np.float64]
K = TypeVar("K", bound=Hashable)

#: How many of the best unseen items by score the ranker considers (the ANN source).
CANDIDATES = 100
#: How many co-occurring items the co-occurrence source adds.
CO_CANDIDATES = 50
#: How many trending items the trending source adds.
TRENDING_CANDIDATES = 20
#: How many of the newest items without interaction data the fresh source adds.
FRESH_CANDIDATES = 10
#: How many of the user's last items the co-occurrence features and source look at.
SESSION = 5
#: How many of the user's last items the category features count.
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

    def partners_of(
        self, history: Sequence[int], limit: int, excluded: Container[int] = frozenset()
    ) -> list[int]:
        """The ``limit`` rows not in ``excluded`` most often viewed together with the
        ``history`` rows, by summed count (ties: the smaller row first); history rows -1
        are skipped."""
        return self.partners_batch([history], limit, [excluded])[0]

    def partners_batch(
        self,
        histories: Sequence[Sequence[int]],
        limit: int,
        excluded: Sequence[Container[int]],
    ) -> list[list[int]]:
        """:meth:`partners_of` of every history (with its own ``excluded``) in one pass:
        the counts of all (history, partner) pairs are summed and ordered together."""
        out: list[list[int]] = [[] for _ in histories]
        n = len(self.partners)
        lengths = [len(h) for h in histories]
        if limit <= 0 or not sum(lengths):
            return out
        rows = np.fromiter(itertools.chain.from_iterable(histories), np.int64, sum(lengths))
        owner = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
        valid = (rows >= 0) & (rows < n)
        rows, owner = rows[valid], owner[valid]
        partners, counts = self.partners[rows], self.counts[rows]
        kept = partners >= 0
        keys = (owner[:, None] * n + partners)[kept]
        found, where = np.unique(keys, return_inverse=True)
        summed = np.bincount(where, weights=counts[kept], minlength=len(found))
        user, partner = found // n, found % n
        order = np.lexsort((partner, -summed, user))
        user, partner = user[order], partner[order]
        bounds = np.searchsorted(user, np.arange(len(histories) + 1)).tolist()
        for u, banned in enumerate(excluded):
            mine = out[u]
            for row in partner[bounds[u] : bounds[u + 1]].tolist():
                if row not in banned:
                    mine.append(row)
                    if len(mine) == limit:
                        break
        return out


def merge_sources(
    ann: Sequence[K],
    cooccurrence: Sequence[K] = (),
    trending: Sequence[K] = (),
    fresh: Sequence[K] = (),
    excluded: Set[K] = frozenset(),
) -> tuple[list[K], npt.NDArray[np.bool_]]:
    """The union of the sources' candidates, first proposal first, without ``excluded``.

    Returns:
        ``(keys, flags)``: flags is (c, len(SOURCES)), True where a source proposed the key.
    """
    sources = (ann, cooccurrence, trending, fresh)
    first: dict[K, None] = {}  # insertion-ordered: the union, first proposal first
    for source in sources:
        first.update(dict.fromkeys(source))
    keys = [key for key in first if key not in excluded] if excluded else list(first)
    at = {key: n for n, key in enumerate(keys)}
    flags = np.zeros((len(keys), len(SOURCES)), dtype=bool)
    for s, source in enumerate(sources):
        if source:
            flags[[at[k] for k in source if k in at], s] = True
    return keys, flags


@dataclass(frozen=True)
class CandidateContext:
    """What the features need to know about the user: their recent items, oldest first.

    Attributes:
        rows: Model rows (-1 for items the model has no row for).
        categories: Their categories ("" for none).
        prices: Their prices (NaN when unknown).
    """

    rows: Sequence[int]
    categories: Sequence[str]
    prices: Sequence[float]


@dataclass(frozen=True)
class RankerSettings:
    """Where a ranker's candidates come from and what its features look at.

    Attributes:
        candidates: How many of the best unseen items by score it considers (ANN source).
        session: Session items the co-occurrence features and source look at.
        category_window: Recent items the category and price features look at.
        co_candidates: Items the co-occurrence source adds.
        trending_candidates: Items the trending source adds.
        fresh_candidates: Items the fresh source adds.
    """

    candidates: int = CANDIDATES
    session: int = SESSION
    category_window: int = CATEGORY_WINDOW
    co_candidates: int = CO_CANDIDATES
    trending_candidates: int = TRENDING_CANDIDATES
    fresh_candidates: int = FRESH_CANDIDATES

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.session < 1 or self.category_window < 1:
            msg = "ranker candidates, session and category_window must be >= 1"
            raise ValueError(msg)
        if min(self.co_candidates, self.trending_candidates, self.fresh_candidates) < 0:
            msg = "ranker co/trending/fresh candidate counts must be >= 0"
            raise ValueError(msg)

    def as_dict(self) -> dict[str, int]:
        return {
            "candidates": self.candidates,
            "session": self.session,
            "category_window": self.category_window,
            "co_candidates": self.co_candidates,
            "trending_candidates": self.trending_candidates,
            "fresh_candidates": self.fresh_candidates,
        }


@dataclass(frozen=True, eq=False)
class LinearRanker:
    """``score = ((features - mean) / std) @ weights`` over :data:`FEATURES`.

    Attributes:
        weights: (f,) learned weights.
        mean: (f,) feature means on the training users.
        std: (f,) feature standard deviations (1 where constant).
        settings: Its candidate sources and feature windows.
    """

    weights: FloatArray = field(repr=False)
    mean: FloatArray = field(repr=False)
    std: FloatArray = field(repr=False)
    settings: RankerSettings = field(default_factory=RankerSettings)

    def __post_init__(self) -> None:
        f = len(FEATURES)
        for name in ("weights", "mean", "std"):
            value = getattr(self, name)
            if value.shape != (f,) or not np.all(np.isfinite(value)):
                msg = (
                    f"LinearRanker.{name} must be {f} finite numbers (one per feature), "
                    f"got shape {value.shape}; a ranker from an older streamrec must be "
                    "retrained with `streamrec train`"
                )
                raise ValueError(msg)

    def score(self, features: FloatArray) -> FloatArray:
        """(c,) learned scores of (c, f) features."""
        z = (features - self.mean) / self.std
        scored: FloatArray = z @ self.weights
        return scored

    def params(self) -> dict[str, int]:
        return self.settings.as_dict()

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
            RankerSettings(**{k: int(v) for k, v in params.items()}),
        )


def rerank_scores(ranker: LinearRanker, features: FloatArray) -> FloatArray:
    """The order the ranker gives: (c,) scores, ties kept in candidate order."""
    return tie_broken(ranker.score(features))


def tie_broken(scores: FloatArray) -> FloatArray:
    """``scores`` (c,) with a tiny rank-based tie-break that keeps equal scores in
    candidate order, deterministically."""
    out: FloatArray = scores - 1e-9 * np.arange(len(scores))
    return out


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
    settings: RankerSettings | None = None,
    l2: float = 1e-3,
    seed: int = 0,
) -> tuple[LinearRanker | None, RankerReport]:
    """Train on half of the users, judge on the other half, refit on all if it helps.

    Args:
        features: Per user, (c, f) features of their candidates (best model score first).
        targets: Per user, the position of their held-out item among the candidates
            (-1: not a candidate; such users count as misses for both orders and do not
            train).
        settings: Recorded in the ranker (the candidate and feature settings used to
            compute ``features``; default: the defaults).
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
    chosen = settings or RankerSettings()
    judge = LinearRanker(w, mean, std, chosen)
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
    ranker = LinearRanker(w, mean, std, chosen)
    named = {name: float(v) for name, v in zip(FEATURES, w, strict=True)}
    return ranker, RankerReport(True, base, learned, named, reachable)
