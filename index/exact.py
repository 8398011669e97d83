"""Exact inner-product search in plain numpy: the reference twin of the FAISS index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.engine.ports import FloatArray, Hits
from streamrec.index.table import ItemTable, TableBacked, as_matrix


class ExactIndex(TableBacked):
    """Brute-force top-k over every alive item; slow, obviously correct.

    Example:
        >>> idx = ExactIndex(2)
        >>> idx.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
        >>> idx.search(np.array([[1, 0]], dtype=np.float32), 1)[0].item_ids
        ('a',)
    """

    def __init__(self, dim: int) -> None:
        self._table = ItemTable(dim)

    def upsert(self, item_ids: Sequence[str], vectors: FloatArray) -> None:
        self._table.append(item_ids, vectors)

    def remove(self, item_ids: Sequence[str]) -> None:
        self._table.remove(item_ids)

    def search(self, queries: FloatArray, k: int) -> list[Hits]:
        q = as_matrix(queries, self.dim)
        ids, vectors = self._table.live()
        if not ids or k <= 0:
            return [Hits((), ()) for _ in range(q.shape[0])]
        scores = q @ vectors.T
        out = []
        for row in scores:
            # Stable sort on -score so ties keep row order, like FAISS's Flat index.
            order = np.argsort(-row, kind="stable")[:k]
            out.append(Hits(tuple(ids[i] for i in order), tuple(float(row[i]) for i in order)))
        return out
