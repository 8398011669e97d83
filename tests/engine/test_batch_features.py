"""The ranker's features for a whole batch are each user's features, as the definitions
in the ranker's module say, computed one user and one candidate at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from streamrec.engine.serving.features import (
    CandidateBlock,
    CategoryCodes,
    batch_features,
    candidate_features,
)
from streamrec.engine.serving.ranker import FEATURES, SOURCES, CandidateContext, CoTable

N_ITEMS = 40
CATEGORIES = ["", "shoes", "books", "tents", "cups"]


def _reference(
    scores: np.ndarray,
    rows: np.ndarray,
    sources: np.ndarray,
    categories: Sequence[str],
    prices: np.ndarray,
    popularity: np.ndarray,
    user: CandidateContext,
    table: CoTable,
    session: int,
    window: int,
) -> np.ndarray:
    """Every feature by its definition, with plain loops."""
    out = np.zeros((len(rows), len(FEATURES)))

    def count(a: int, b: int) -> int:
        if not 0 <= a < N_ITEMS:
            return 0
        for partner, n in zip(table.partners[a], table.counts[a], strict=True):
            if partner == b and partner >= 0:
                return int(n)
        return 0

    last = list(user.rows[-session:])
    recent = list(user.categories[-window:])
    known = [p for p in user.prices[-window:] if math.isfinite(p) and p > 0]
    for k, row in enumerate(rows.tolist()):
        counts = [count(a, row) for a in last]
        out[k, 0], out[k, 1], out[k, 2] = scores[k], math.log1p(k), popularity[k]
        if counts:
            out[k, 3:6] = [math.log1p(max(counts)), math.log1p(counts[-1]), math.log1p(sum(counts))]
        cat = categories[k]
        if cat and cat in recent:
            out[k, 6] = recent.count(cat) / len(recent)
            out[k, 7] = 1.0 / (1 + list(reversed(recent)).index(cat))
        if known and math.isfinite(prices[k]) and prices[k] > 0:
            out[k, 8] = math.exp(-abs(math.log(prices[k]) - float(np.median(np.log(known)))))
        out[k, 9:] = sources[k]
    return out


def _user(rng: np.random.Generator) -> dict[str, object]:
    c = int(rng.integers(0, 30))
    h = int(rng.integers(0, 25))
    price = lambda: float(rng.choice([np.nan, -1.0, 0.0, *rng.uniform(1, 500, 3)]))  # noqa: E731
    return {
        "scores": np.sort(rng.normal(size=c))[::-1].copy(),
        "rows": rng.integers(-1, N_ITEMS + 3, size=c),  # -1: no model row; beyond: unknown
        "sources": rng.random((c, len(SOURCES))) < 0.4,
        "categories": [str(x) for x in rng.choice(CATEGORIES, size=c)],
        "prices": np.asarray([price() for _ in range(c)]),
        "popularity": rng.random(c),
        "user": CandidateContext(
            rows=[int(r) for r in rng.integers(-1, N_ITEMS, size=h)],
            categories=[str(x) for x in rng.choice(CATEGORIES, size=h)],
            prices=[price() for _ in range(h)],
        ),
    }


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_has_each_users_features_by_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sequence = rng.integers(0, N_ITEMS, size=400).tolist()
    table = CoTable.build([(sequence, ["view"] * len(sequence))], N_ITEMS, max_partners=8)
    users = [_user(rng) for _ in range(12)]
    session, window = 3, 6
    codes = CategoryCodes()
    blocks = [
        CandidateBlock(
            scores=u["scores"],  # type: ignore[arg-type]
            rows=u["rows"],  # type: ignore[arg-type]
            sources=u["sources"],  # type: ignore[arg-type]
            categories=codes.codes(u["categories"]),  # type: ignore[arg-type]
            prices=u["prices"],  # type: ignore[arg-type]
            popularity=u["popularity"],  # type: ignore[arg-type]
            recent_rows=u["user"].rows,  # type: ignore[attr-defined]
            recent_categories=codes.codes(u["user"].categories),  # type: ignore[attr-defined]
            recent_prices=u["user"].prices,  # type: ignore[attr-defined]
        )
        for u in users
    ]
    batch = batch_features(blocks, table, session=session, category_window=window)
    expected = [
        _reference(**u, table=table, session=session, window=window)  # type: ignore[arg-type]
        for u in users
    ]
    np.testing.assert_allclose(batch, np.concatenate(expected), rtol=1e-12, atol=0)
    one_by_one = [
        candidate_features(
            u["scores"],  # type: ignore[arg-type]
            u["rows"],  # type: ignore[arg-type]
            u["sources"],  # type: ignore[arg-type]
            u["categories"],  # type: ignore[arg-type]
            u["prices"],  # type: ignore[arg-type]
            u["popularity"],  # type: ignore[arg-type]
            u["user"],  # type: ignore[arg-type]
            table,
            session=session,
            category_window=window,
        )
        for u in users
    ]
    # Bit for bit: a user's features do not depend on who else is in the batch.
    np.testing.assert_array_equal(batch, np.concatenate(one_by_one))


def test_an_empty_batch_and_users_without_candidates_give_no_rows() -> None:
    table = CoTable.build([([0, 1, 2], ["view"] * 3)], 3)
    assert batch_features([], table).shape == (0, len(FEATURES))
    empty = CandidateBlock(
        np.zeros(0), np.zeros(0, dtype=np.intp), np.zeros((0, len(SOURCES)), dtype=bool),
        np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), [1, 2],
        np.zeros(2, dtype=np.int64), [1.0, 2.0],
    )  # fmt: skip
    assert batch_features([empty, empty], table).shape == (0, len(FEATURES))


def test_category_codes_are_dense_and_none_is_minus_one() -> None:
    codes = CategoryCodes()
    assert codes.codes(["shoes", "", "books", "shoes"]).tolist() == [0, -1, 1, 0]
    assert codes.code("tents") == 2
