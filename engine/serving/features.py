"""The learned ranker's features (:data:`~streamrec.engine.serving.ranker.FEATURES`) for a
whole batch of users at once. Pure.

Every user's candidates are stacked into one (sum of candidates, features) matrix: the
co-occurrence counts of all (user, candidate, session item) triples come from one binary
search over the batch's partner keys, the category features from one lookup in the
batch's (user, category) table, so a batch costs a few numpy calls, not a few per user.
:func:`candidate_features` is the same computation for one user (training and offline
evaluation call it; the worker calls :func:`batch_features`), so online and offline
features are the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.ranker import (
    CATEGORY_WINDOW,
    FEATURES,
    SESSION,
    SOURCES,
    CandidateContext,
    CoTable,
)

__all__ = ["CandidateBlock", "CategoryCodes", "batch_features", "candidate_features"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class CategoryCodes:
    """Category names as dense integer codes (-1 for none, the empty name); a new name
    gets the next code."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": -1}

    def code(self, category: str) -> int:
        found = self._codes.get(category)
        if found is None:
            found = self._codes[category] = len(self._codes) - 1
        return found

    def codes(self, categories: Iterable[str]) -> IntArray:
        names = categories if isinstance(categories, list | tuple) else list(categories)
        for name in dict.fromkeys(names):  # new names coded in order of appearance
            self.code(name)
        return np.fromiter(map(self._codes.__getitem__, names), dtype=np.int64, count=len(names))


@dataclass(frozen=True)
class CandidateBlock:
    """One user's candidates and recent items, as the features read them.

    Attributes:
        scores: (c,) the model's scores of the candidates, best first.
        rows: (c,) their model rows (-1 for items indexed from their text).
        sources: (c, len(SOURCES)) which sources proposed each.
        categories: (c,) their category codes (:class:`CategoryCodes`, -1 for none).
        prices: (c,) their prices (NaN when unknown).
        popularity: (c,) their normalised log popularity.
        recent_rows: The user's recent items' model rows, oldest first (-1 for none).
        recent_categories: Their category codes, oldest first.
        recent_prices: Their prices, oldest first (NaN when unknown).
    """

    scores: npt.NDArray[np.floating]
    rows: npt.NDArray[np.integer]
    sources: npt.NDArray[np.bool_]
    categories: IntArray
    prices: npt.NDArray[np.floating]
    popularity: npt.NDArray[np.floating]
    recent_rows: Sequence[int]
    recent_categories: IntArray
    recent_prices: Sequence[float]


def candidate_features(
    scores: npt.NDArray[np.floating],
    candidates: npt.NDArray[np.intp],
    sources: npt.NDArray[np.bool_],
    categories: Sequence[str],
    prices: npt.NDArray[np.floating],
    popularity: npt.NDArray[np.floating],
    user: CandidateContext,
    table: CoTable,
    *,
    session: int = SESSION,
    category_window: int = CATEGORY_WINDOW,
) -> FloatArray:
    """(c, len(FEATURES)) features of one user's candidates: :func:`batch_features` of a
    batch of one.

    Args:
        scores: (c,) the model's scores of the candidates, best first.
        candidates: (c,) their model rows (-1 for items indexed from their text).
        sources: (c, len(SOURCES)) which sources proposed each (``merge_sources``).
        categories: (c,) their categories ("" for none).
        prices: (c,) their prices (NaN when unknown).
        popularity: (c,) their normalised log popularity.
        user: The user's recent items.
        table: The co-occurrence table.
        session: How many of the last history items the co-occurrence features use.
        category_window: How many of the last history items the category features count.
    """
    names = CategoryCodes()
    block = CandidateBlock(
        scores=np.asarray(scores),
        rows=np.asarray(candidates),
        sources=np.asarray(sources, dtype=bool).reshape(-1, len(SOURCES)),
        categories=names.codes(categories),
        prices=np.asarray(prices, dtype=np.float64),
        popularity=np.asarray(popularity),
        recent_rows=list(user.rows),
        recent_categories=names.codes(user.categories),
        recent_prices=list(user.prices),
    )
    return batch_features([block], table, session=session, category_window=category_window)


def batch_features(
    blocks: Sequence[CandidateBlock],
    table: CoTable,
    *,
    session: int = SESSION,
    category_window: int = CATEGORY_WINDOW,
) -> FloatArray:
    """(sum of candidates, len(FEATURES)) features of every block's candidates, block after
    block (see the ranker's module for what each feature is).

    Args:
        blocks: One per user.
        table: The co-occurrence table.
        session: How many of the last recent items the co-occurrence features use.
        category_window: How many of the last recent items the category and price
            features count.
    """
    sizes = np.asarray([len(b.rows) for b in blocks], dtype=np.int64)
    out = np.zeros((int(sizes.sum()), len(FEATURES)), dtype=np.float64)
    if not len(out):
        return out
    owner = np.repeat(np.arange(len(blocks)), sizes)  # each candidate's block
    starts = np.cumsum(sizes) - sizes
    rows = np.concatenate([np.asarray(b.rows, dtype=np.int64) for b in blocks])
    out[:, 0] = np.concatenate([b.scores for b in blocks])
    out[:, 1] = np.log1p(np.arange(len(out)) - starts[owner])
    out[:, 2] = np.concatenate([b.popularity for b in blocks])
    out[:, 3:6] = _cooccurrence(
        table, [list(b.recent_rows)[-session:] for b in blocks], rows, owner
    )
    recent = [b.recent_categories[-category_window:] for b in blocks]
    codes = np.concatenate([b.categories for b in blocks])
    out[:, 6:8] = _category(recent, codes, owner)
    centres = np.asarray([_price_centre(b.recent_prices[-category_window:]) for b in blocks])
    if np.isfinite(centres).any():
        price = np.concatenate([b.prices for b in blocks]).astype(np.float64, copy=False)
        centre = centres[owner]
        ok = np.isfinite(price) & (price > 0) & np.isfinite(centre)
        gap = np.abs(np.log(np.where(ok, price, 1.0)) - np.where(ok, centre, 0.0))
        out[:, 8] = np.where(ok, np.exp(-gap), 0.0)
    out[:, 9 : 9 + len(SOURCES)] = np.concatenate([b.sources for b in blocks])
    return out


def _cooccurrence(
    table: CoTable, lasts: Sequence[Sequence[int]], rows: IntArray, owner: IntArray
) -> FloatArray:
    """(c, 3) ``log1p`` of each candidate's largest, last and summed co-occurrence count
    with its user's ``lasts`` (0 for a user without recent items).

    Each (user, recent item) pair is a block of sorted keys ``block * (n + 1) + partner +
    1``; every candidate asks each of its user's blocks by one binary search over them
    all. Padding partners (-1) sit at offset 0, where a candidate -1 (no model row) meets
    only count 0.
    """
    out = np.zeros((len(rows), 3), dtype=np.float64)
    n, span = len(table.partners), len(table.partners) + 1
    lengths = np.asarray([len(last) for last in lasts], dtype=np.int64)
    if not lengths.any():
        return out
    items = np.concatenate([np.asarray(last, dtype=np.int64) for last in lasts])
    block = np.arange(len(items), dtype=np.int64)
    valid = (items >= 0) & (items < n)
    keys = (block[valid, None] * span + table.partners[items[valid]].astype(np.int64) + 1).ravel()
    if not len(keys):
        return out
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], table.counts[items[valid]].ravel()[order]
    # Every candidate asks each block of its user: candidate-major, blocks in history order.
    asks = lengths[owner]
    has = asks > 0
    first = np.cumsum(asks) - asks
    candidate = np.repeat(np.arange(len(rows)), asks)
    within = np.arange(int(asks.sum())) - first[candidate]
    user_block = (np.cumsum(lengths) - lengths)[owner[candidate]] + within
    asked = rows[candidate]
    asked = np.where((asked >= 0) & (asked < n), asked, -1)  # no row: meets only padding
    queries = user_block * span + asked + 1
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    found = np.where(keys[at] == queries, counts[at], 0).astype(np.int64)
    firsts = first[has]
    out[has, 0] = np.log1p(np.maximum.reduceat(found, firsts))
    out[has, 1] = np.log1p(found[firsts + asks[has] - 1])
    out[has, 2] = np.log1p(np.add.reduceat(found, firsts))
    return out


def _category(recent: Sequence[IntArray], codes: IntArray, owner: IntArray) -> FloatArray:
    """(c, 2) each candidate's category share among its user's ``recent`` categories and
    ``1 / (1 + k)``, k how many items ago the user last met it (0 for none)."""
    out = np.zeros((len(codes), 2), dtype=np.float64)
    lengths = np.asarray([len(r) for r in recent], dtype=np.int64)
    if not lengths.any():
        return out
    seen = np.concatenate(recent).astype(np.int64, copy=False)
    user = np.repeat(np.arange(len(recent)), lengths)
    position = np.arange(len(seen)) - (np.cumsum(lengths) - lengths)[user]
    named = seen >= 0
    if not named.any():
        return out
    width = int(max(seen.max(), codes.max())) + 1
    keys = user[named] * width + seen[named]
    # The last occurrence of each (user, category): the first one read backwards.
    table, back, times = np.unique(keys[::-1], return_index=True, return_counts=True)
    last = position[named][::-1][back]
    share = times / lengths[table // width]
    recency = 1.0 / (1 + (lengths[table // width] - 1 - last))
    queries = owner * width + codes
    at = np.minimum(np.searchsorted(table, queries), len(table) - 1)
    hit = (codes >= 0) & (table[at] == queries)
    out[:, 0] = np.where(hit, share[at], 0.0)
    out[:, 1] = np.where(hit, recency[at], 0.0)
    return out


def _price_centre(prices: Sequence[float]) -> float:
    """The median log price of the known (finite, positive) ``prices``; NaN for none."""
    known = [p for p in prices if math.isfinite(p) and p > 0]
    return float(np.median(np.log(known))) if known else math.nan
