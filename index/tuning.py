"""Choosing the index for a catalog: measured recall against exact search, and speed.

Small catalogs get exact search (``Flat``): below :data:`FLAT_MAX_ITEMS` items it is fast
enough and has nothing to tune. Larger ones get an approximate index, chosen by measuring
on the actual vectors and queries: each candidate (HNSW with several ``efSearch``, IVF
with several ``nprobe``) is built once, every setting is timed on the same query batch,
and its recall@k is computed against exact search. The fastest setting whose recall
reaches the target wins; when none does, the most accurate one, with a warning. The
report (every measurement, the machine's threads) is written next to the index as
``tuning.json`` by ``streamrec index build``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> items = rng.standard_normal((500, 8)).astype(np.float32)
    >>> report = tune_index(items, items[:20], k=10, candidates=[Candidate("Flat")])
    >>> report.choice.factory, report.choice.recall
    ('Flat', 1.0)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from streamrec.index.faiss_index import train

__all__ = [
    "FLAT_MAX_ITEMS",
    "Candidate",
    "Measured",
    "TuningReport",
    "default_candidates",
    "tune_index",
]

log = logging.getLogger(__name__)

#: Up to this many items exact search is used without tuning.
FLAT_MAX_ITEMS = 50_000


@dataclass(frozen=True)
class Candidate:
    """An index type and the search settings to try with it.

    Attributes:
        factory: A faiss index factory string.
        param: The search-time parameter swept (``efSearch``, ``nprobe``), or "" for none.
        values: Its values, cheapest first.
    """

    factory: str
    param: str = ""
    values: tuple[int, ...] = ()

    def settings(self) -> list[dict[str, int]]:
        return [{self.param: v} for v in self.values] if self.param else [{}]


@dataclass(frozen=True)
class Measured:
    """One setting measured: recall@k against exact search and queries per second."""

    factory: str
    params: dict[str, int]
    recall: float
    qps: float
    build_s: float = 0.0


@dataclass(frozen=True)
class TuningReport:
    """What was measured and chosen.

    Attributes:
        choice: The chosen setting.
        exact: Exact search (``Flat``) on the same queries: its speed is the baseline.
        tried: Every setting measured.
        n_items: Items indexed.
        dim: Vector dimension.
        k: The recall cut-off.
        target_recall: Least recall@k wanted.
        queries: Query vectors used.
        threads: faiss OpenMP threads during the measurement.
        reached: Whether the choice reaches ``target_recall``.
    """

    choice: Measured
    exact: Measured
    tried: tuple[Measured, ...]
    n_items: int
    dim: int
    k: int
    target_recall: float
    queries: int
    threads: int
    reached: bool = True

    @property
    def speedup(self) -> float:
        """The choice's queries/s over exact search's."""
        return self.choice.qps / self.exact.qps if self.exact.qps > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["speedup"] = self.speedup
        return out


def default_candidates(n_items: int) -> list[Candidate]:
    """Exact search up to :data:`FLAT_MAX_ITEMS`; above, HNSW32 and IVF with about
    ``2 * sqrt(n)`` lists (a power of two), over increasing search effort."""
    if n_items <= FLAT_MAX_ITEMS:
        return [Candidate("Flat")]
    nlist = 2 ** round(math.log2(2 * math.sqrt(n_items)))
    return [
        Candidate("HNSW32", "efSearch", (16, 32, 64, 128, 256, 512)),
        Candidate(f"IVF{nlist},Flat", "nprobe", (4, 8, 16, 32, 64, 128, 256)),
    ]


def _build(factory: str, vectors: npt.NDArray[np.float32]) -> Any:
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        train(index, vectors)
    index.add(vectors)
    return index


def _timed_search(
    index: Any, queries: npt.NDArray[np.float32], k: int, clock: Callable[[], float]
) -> tuple[npt.NDArray[np.int64], float]:
    """Ids of the top k and queries/s (the best of two runs, the first also warms up)."""
    best = math.inf
    ids: npt.NDArray[np.int64] = np.empty((0, k), dtype=np.int64)
    for _ in range(2):
        start = clock()
        _, ids = index.search(queries, k)
        best = min(best, clock() - start)
    return ids, len(queries) / best if best > 0 else math.inf


def recall_at_k(found: npt.NDArray[np.int64], exact: npt.NDArray[np.int64]) -> float:
    """Mean share of each query's exact top-k that ``found`` also returns.

    Example:
        >>> recall_at_k(np.array([[1, 2], [3, 9]]), np.array([[2, 1], [3, 4]]))
        0.75
    """
    hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1]) if len(hits) else math.nan


def tune_index(
    vectors: npt.NDArray[np.floating],
    queries: npt.NDArray[np.floating],
    *,
    k: int = 100,
    target_recall: float = 0.95,
    candidates: Sequence[Candidate] | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TuningReport:
    """Measure each candidate setting and choose the fastest that reaches the target.

    Args:
        vectors: (n, d) the vectors to index (as served: popularity-augmented).
        queries: (q, d) representative queries (as served).
        k: The recall cut-off (the worker fetches about ``k + fan_out`` candidates).
        target_recall: Least recall@k against exact search.
        candidates: Settings to try (default: :func:`default_candidates`).
        progress: Called with a line after each measurement.
        clock: Seconds, for the timings.

    Returns:
        The report; ``reached`` is False when no setting reached the target.

    Raises:
        ValueError: empty inputs, mismatched dimensions, or a bad ``k`` / target.
    """
    items = np.ascontiguousarray(vectors, dtype=np.float32)
    qs = np.ascontiguousarray(queries, dtype=np.float32)
    if items.ndim != 2 or qs.ndim != 2 or items.shape[1] != qs.shape[1] or not len(items):
        msg = f"need (n, d) vectors and (q, d) queries, got {items.shape} and {qs.shape}"
        raise ValueError(msg)
    if not len(qs) or k < 1 or not 0.0 < target_recall <= 1.0:
        msg = f"need queries, k >= 1 and a target in (0, 1], got {len(qs)}, {k}, {target_recall}"
        raise ValueError(msg)
    k = min(k, len(items))
    say = progress or (lambda line: None)
    start = clock()
    flat = _build("Flat", items)
    exact_build = clock() - start
    exact_ids, exact_qps = _timed_search(flat, qs, k, clock)
    exact = Measured("Flat", {}, 1.0, exact_qps, exact_build)
    say(f"Flat: exact, {exact_qps:,.0f} queries/s")
    tried: list[Measured] = []
    for candidate in candidates if candidates is not None else default_candidates(len(items)):
        if candidate.factory == "Flat":
            tried.append(exact)
            continue
        start = clock()
        index = _build(candidate.factory, items)
        built = clock() - start
        space = faiss.ParameterSpace()
        for setting in candidate.settings():
            for name, value in setting.items():
                space.set_index_parameter(index, name, value)
            ids, qps = _timed_search(index, qs, k, clock)
            measured = Measured(candidate.factory, setting, recall_at_k(ids, exact_ids), qps, built)
            tried.append(measured)
            say(
                f"{candidate.factory} {setting}: recall@{k} {measured.recall:.4f}, "
                f"{qps:,.0f} queries/s (built in {built:.1f} s)"
            )
            if measured.recall >= 0.999:
                break  # more effort only costs speed
    good = [m for m in tried if m.recall >= target_recall]
    reached = bool(good)
    choice = max(good, key=lambda m: m.qps) if good else max(tried, key=lambda m: m.recall)
    if not reached:
        log.warning(
            "no index setting reached recall@%d %.2f; using the most accurate: %s %s (%.4f)",
            k,
            target_recall,
            choice.factory,
            choice.params,
            choice.recall,
        )
    if choice.qps < exact.qps and choice.factory != "Flat":
        choice = exact  # an approximate index slower than exact search is no gain
        reached = True
    return TuningReport(
        choice=choice,
        exact=exact,
        tried=tuple(tried),
        n_items=len(items),
        dim=items.shape[1],
        k=k,
        target_recall=target_recall,
        queries=len(qs),
        threads=faiss.omp_get_max_threads(),
        reached=reached,
    )
