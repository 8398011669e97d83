"""Index choice by catalog size, from measured recall against exact search and speed."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import streamrec.index.tuning as tuning
from streamrec.index.tuning import (
    FLAT_MAX_ITEMS,
    Candidate,
    default_candidates,
    recall_at_k,
    tune_index,
)


def clustered(n: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, d))
    x = centers[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, 40)] + 0.1 * rng.standard_normal((40, d))
    return x.astype(np.float32), q.astype(np.float32)


def test_small_catalogs_use_exact_search_and_large_ones_are_tuned():
    assert default_candidates(FLAT_MAX_ITEMS) == [Candidate("Flat")]
    large = default_candidates(1_000_000)
    assert [c.factory for c in large] == ["HNSW32", "IVF2048,Flat"]
    assert all(list(c.values) == sorted(c.values) for c in large)


def test_the_fastest_setting_that_reaches_the_target_recall_is_chosen():
    items, queries = clustered(4000)
    ticks = iter(np.arange(0.0, 1e6, 0.5))  # every search takes 0.5 "s": equal speeds
    candidates = [Candidate("IVF16,Flat", "nprobe", (1, 2, 4, 8, 16))]
    report = tune_index(
        items, queries, k=20, target_recall=0.9, candidates=candidates, clock=lambda: next(ticks)
    )
    ivf = [m for m in report.tried if m.factory.startswith("IVF")]
    assert [m.params["nprobe"] for m in ivf][:2] == [1, 2]
    recalls = [m.recall for m in ivf]
    assert recalls == sorted(recalls)  # more lists probed, more recall
    assert ivf[-1].recall >= 0.999 or ivf[-1].params["nprobe"] == 16
    assert report.reached
    assert report.choice.recall >= 0.9
    assert report.exact.recall == 1.0
    assert report.as_dict()["choice"]["factory"] == report.choice.factory


def test_an_unreachable_target_keeps_the_most_accurate_setting_and_says_so(caplog):
    items, queries = clustered(4000, seed=1)
    # Exact search takes 10 s per batch, the IVF index 1 s: the IVF one is kept.
    times = iter([0.0, 1.0, 1.0, 11.0, 11.0, 21.0, *np.arange(22.0, 100.0)])
    report = tune_index(
        items,
        queries,
        k=50,
        target_recall=1.0,
        candidates=[Candidate("IVF64,Flat", "nprobe", (1,))],
        clock=lambda: next(times),
    )
    assert report.speedup == pytest.approx(10.0)
    assert not report.reached
    assert report.choice.params == {"nprobe": 1}
    assert "no index setting reached" in caplog.text


def test_recall_is_the_share_of_the_exact_top_k_found():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 1]])) == 1.0
    assert recall_at_k(np.array([[1, 5, 6]]), np.array([[3, 2, 1]])) == pytest.approx(1 / 3)


def test_bad_inputs_are_refused():
    items, queries = clustered(100)
    with pytest.raises(ValueError, match="queries"):
        tune_index(items, queries[:, :3])
    with pytest.raises(ValueError, match="target"):
        tune_index(items, queries, target_recall=1.5)


def test_docstring_examples_hold():
    assert doctest.testmod(tuning).failed == 0
