"""Item id <-> row bookkeeping shared by every index implementation.

Rows are append-only; replacing or removing an item marks its old row dead (a
tombstone) so that index types without in-place updates (Flat on GPU, IVF, HNSW) can
still take online changes. ``dead_fraction`` tells the owner when to compact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from streamrec.engine.ports import FloatArray


class IndexInputError(ValueError):
    """Vectors or ids handed to an index have the wrong shape, length or values."""


def as_matrix(vectors: FloatArray, dim: int, n: int | None = None) -> FloatArray:
    """Validate and convert (n, dim) vectors to contiguous float32."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        msg = f"expected vectors of shape (n, {dim}), got {arr.shape}"
        raise IndexInputError(msg)
    if n is not None and arr.shape[0] != n:
        msg = f"expected {n} vectors (one per item id), got {arr.shape[0]}"
        raise IndexInputError(msg)
    if not np.isfinite(arr).all():
        msg = "vectors contain NaN or infinite values"
        raise IndexInputError(msg)
    return arr


class ItemTable:
    """Append-only rows of (item id, vector) with tombstones."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim <= 0:
            msg = f"dim must be positive, got {dim}"
            raise IndexInputError(msg)
        self.dim = dim
        self._vectors = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._ids: list[str] = []
        self._alive = np.zeros(max(capacity, 1), dtype=bool)
        self._row_of: dict[str, int] = {}

    @property
    def rows(self) -> int:
        """Rows ever appended (alive and dead)."""
        return len(self._ids)

    @property
    def dead_fraction(self) -> float:
        return 0.0 if not self._ids else 1.0 - len(self._row_of) / len(self._ids)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._row_of)

    def append(self, item_ids: Sequence[str], vectors: FloatArray) -> FloatArray:
        """Append rows (tombstoning older rows of the same ids); returns the new rows."""
        arr = as_matrix(vectors, self.dim, len(item_ids))
        start = len(self._ids)
        self._grow(start + len(item_ids))
        self._vectors[start : start + len(item_ids)] = arr
        for offset, item_id in enumerate(item_ids):
            old = self._row_of.get(item_id)
            if old is not None:
                self._alive[old] = False
            self._row_of[item_id] = start + offset
            self._alive[start + offset] = True
            self._ids.append(item_id)
        # A later duplicate id in the same call wins; earlier rows of it are dead already.
        return self._vectors[start : start + len(item_ids)]

    def remove(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            row = self._row_of.pop(item_id, None)
            if row is not None:
                self._alive[row] = False

    def vector(self, item_id: str) -> FloatArray | None:
        row = self._row_of.get(item_id)
        return None if row is None else self._vectors[row].copy()

    def hits(
        self, scores: FloatArray, rows: npt.NDArray[np.int64], k: int
    ) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
        """Per query row, the first ``k`` alive (id, score) pairs of an index's (q, f)
        result (``rows`` -1 for none), in result order; one vectorised pass."""
        valid = (rows >= 0) & (rows < len(self._ids))
        safe = np.where(valid, rows, 0)
        keep = valid & self._alive[safe]
        id_of = self._ids.__getitem__
        out = []
        for q in range(rows.shape[0]):
            picked = np.flatnonzero(keep[q])[:k]
            out.append(
                (
                    tuple(map(id_of, safe[q, picked].tolist())),
                    tuple(scores[q, picked].tolist()),
                )
            )
        return out

    def live(self) -> tuple[list[str], FloatArray]:
        """Alive ids and their vectors, in row order: (n,), (n, d)."""
        rows = np.flatnonzero(self._alive[: len(self._ids)])
        return [self._ids[r] for r in rows], self._vectors[rows].copy()

    def alive_mask(self) -> np.ndarray:
        return self._alive[: len(self._ids)]

    def _grow(self, needed: int) -> None:
        if needed <= self._vectors.shape[0]:
            return
        capacity = max(needed, 2 * self._vectors.shape[0])
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[: len(self._ids)] = self._vectors[: len(self._ids)]
        alive = np.zeros(capacity, dtype=bool)
        alive[: len(self._ids)] = self._alive[: len(self._ids)]
        self._vectors, self._alive = vectors, alive


class TableBacked:
    """The id bookkeeping every index shares: dimension, size, membership, stored vectors."""

    _table: ItemTable

    @property
    def dim(self) -> int:
        return self._table.dim

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._table

    def vector(self, item_id: str) -> FloatArray | None:
        """The stored (d,) vector of an item, or None when it is not indexed."""
        return self._table.vector(item_id)

    def entries(self) -> tuple[list[str], FloatArray]:
        """Every indexed id and its stored vector, in insertion order: (n,), (n, d)."""
        return self._table.live()
