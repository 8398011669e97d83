"""Ports: what the engine needs from the outside, as Protocols.

Each port has a production implementation (FAISS in ``index/``) and a plain in-memory
reference twin; both pass the same shared tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Hits:
    """Search results for one query: item ids best first, and their inner-product scores."""

    item_ids: tuple[str, ...]
    scores: tuple[float, ...]


class CandidateIndex(Protocol):
    """A nearest-neighbour index of item vectors keyed by item id (inner product)."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def upsert(self, item_ids: Sequence[str], vectors: FloatArray) -> None:
        """Add new items or replace the vectors of known ones. vectors: (n, d)."""

    def remove(self, item_ids: Sequence[str]) -> None:
        """Forget items; unknown ids are ignored."""

    def vector(self, item_id: str) -> FloatArray | None:
        """The stored (d,) vector of an item, or None when it is not indexed."""

    def search(self, queries: FloatArray, k: int) -> list[Hits]:
        """Top-k items for each query row. queries: (q, d) -> q hit lists of length <= k."""
