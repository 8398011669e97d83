"""Exact inner-product search with torch: the GPU path where faiss-gpu cannot be installed.

Same contract as :class:`streamrec.index.faiss_index.FaissItemIndex`. Vectors live on the device in
``dtype`` (float16 by default on CUDA, float32 on CPU); search is a chunked matrix product
followed by a two-stage top-k (per item chunk, then over the chunk winners), which keeps
memory bounded and is faster than one top-k over the full score row for large catalogs.
torch is imported lazily: this module is only used when torch is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamrec.engine.ports import FloatArray, Hits
from streamrec.index.table import ItemTable, TableBacked, as_matrix


class TorchExactIndex(TableBacked):
    """Brute-force top-k on a torch device.

    Args:
        dim: vector dimension d.
        device: a torch device string ("cuda", "cuda:0", "cpu").
        dtype: "float16", "bfloat16" or "float32" for the stored vectors and the product.
        item_chunk: items scored per matrix product (bounds memory: batch x chunk).
        block: items per block in the exact two-level top-k (1 = plain top-k).
    """

    def __init__(
        self,
        dim: int,
        device: str = "cpu",
        dtype: str = "float32",
        item_chunk: int = 1_048_576,
        block: int = 32,
    ) -> None:
        import torch

        self._torch: Any = torch
        self._table = ItemTable(dim)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.item_chunk = item_chunk
        self.block = block
        self._vectors: Any = torch.zeros((0, dim), dtype=self.dtype, device=self.device)
        self._dead: Any = torch.zeros(0, dtype=torch.bool, device=self.device)

    def upsert(self, item_ids: Sequence[str], vectors: FloatArray) -> None:
        if not item_ids:
            return
        rows = self._table.append(item_ids, vectors)
        torch = self._torch
        new = torch.as_tensor(rows, device=self.device).to(self.dtype)
        self._vectors = torch.cat([self._vectors, new])
        self._sync_dead()
        if self._table.dead_fraction > 0.2:
            self._compact()

    def remove(self, item_ids: Sequence[str]) -> None:
        self._table.remove(item_ids)
        self._sync_dead()

    def search(self, queries: FloatArray, k: int) -> list[Hits]:
        """Top-k alive items per query row: (q, d) -> q hit lists of length <= k."""
        q = as_matrix(queries, self.dim)
        if len(self._table) == 0 or k <= 0:
            return [Hits((), ()) for _ in range(q.shape[0])]
        scores, rows = self.search_tensors(self._torch.as_tensor(q, device=self.device), k)
        scores_np = scores.float().cpu().numpy()
        rows_np = np.where(np.isfinite(scores_np), rows.cpu().numpy(), -1).astype(np.int64)
        return [Hits(ids, kept) for ids, kept in self._table.hits(scores_np, rows_np, k)]

    def search_tensors(self, queries: Any, k: int) -> tuple[Any, Any]:
        """Device-side search for benchmarks and batch callers: (q, d) -> ((q, k'), (q, k'))
        scores and row numbers, k' = min(k, rows); dead rows score -inf."""
        torch = self._torch
        n = self._vectors.shape[0]
        k = min(k, n)
        q = queries.to(self.device, self.dtype)
        best_scores, best_rows = [], []
        with torch.inference_mode():
            for start in range(0, n, self.item_chunk):
                chunk = self._vectors[start : start + self.item_chunk]
                scores = q @ chunk.T
                dead = self._dead[start : start + self.item_chunk]
                if bool(dead.any()):
                    scores = scores.masked_fill(dead, float("-inf"))
                pad = (-scores.shape[1]) % self.block if self.block > 1 else 0
                if pad:  # a last, partial chunk: pad with -inf to whole blocks
                    scores = torch.nn.functional.pad(scores, (0, pad), value=float("-inf"))
                values, idx = _block_topk(torch, scores, min(k, chunk.shape[0]), self.block)
                best_scores.append(values)
                best_rows.append(idx + start)
            scores = torch.cat(best_scores, dim=1)
            rows = torch.cat(best_rows, dim=1)
            if len(best_scores) > 1:
                top = torch.topk(scores, k, dim=1)
                scores, rows = top.values, torch.gather(rows, 1, top.indices)
        return scores, rows

    def _sync_dead(self) -> None:
        mask = ~self._table.alive_mask()
        self._dead = self._torch.as_tensor(mask, device=self.device)

    def _compact(self) -> None:
        ids, vectors = self._table.live()
        self._table = ItemTable(self.dim, capacity=max(len(ids), 1024))
        self._table.append(ids, vectors)
        self._vectors = self._torch.as_tensor(vectors, device=self.device).to(self.dtype)
        self._sync_dead()


def _block_topk(torch: Any, scores: Any, k: int, block: int) -> tuple[Any, Any]:
    """Exact top-k of each row of (q, n) ``scores`` via block maxima.

    Columns are split into ``n / block`` blocks; block j holds columns j, j + n/block,
    j + 2n/block, ... (a strided split, so the block maximum is an element-wise maximum of
    ``block`` contiguous slices: one fast pass over the scores). The blocks holding the
    true top-k all have a maximum >= the k-th best score, and at most k blocks can, so the
    k blocks with the largest maxima contain the answer: top-k over n / block maxima, then
    over those k * block scores. Top-k over n, not the matrix product, dominates otherwise.
    """
    q, n = scores.shape
    if block <= 1 or n % block or n // block <= k:
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices
    width = n // block
    maxima = scores.view(q, block, width).amax(dim=1)  # (q, width)
    _, best = torch.topk(maxima, k, dim=1)  # (q, k) block numbers
    offsets = torch.arange(block, device=scores.device).view(1, block, 1) * width
    columns = (offsets + best.view(q, 1, k)).reshape(q, block * k)
    values, pos = torch.topk(torch.gather(scores, 1, columns), k, dim=1)
    return values, torch.gather(columns, 1, pos)
