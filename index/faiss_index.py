"""FAISS-backed item index: build, search, online upserts/removals, persistence, GPU.

Rows are kept in an :class:`~streamrec.index.table.ItemTable`; the FAISS index holds one vector per
row with the row number as its id. Replaced or removed items leave a tombstone that
search skips; the index is rebuilt from the alive rows when tombstones pass
``compact_at`` of all rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrec.engine.ports import FloatArray, Hits
from streamrec.index.device import Device
from streamrec.index.table import IndexInputError, ItemTable, TableBacked, as_matrix

log = logging.getLogger(__name__)

INDEX_FILE = "items.faiss"
IDS_FILE = "items.ids.json"
VECTORS_FILE = "items.vectors.npy"


#: Training points per IVF list (faiss's k-means samples 256 a list at most anyway).
TRAIN_POINTS_PER_LIST = 64


def train(index: Any, vectors: FloatArray) -> None:
    """Train a trainable faiss index on a seeded sample of ``vectors``: at most
    ``TRAIN_POINTS_PER_LIST`` points per IVF list (all of them for other types)."""
    ivf = faiss.try_extract_index_ivf(index)
    limit = len(vectors) if ivf is None else max(TRAIN_POINTS_PER_LIST * ivf.nlist, 1)
    if len(vectors) > limit:
        rows = np.random.default_rng(0).choice(len(vectors), size=limit, replace=False)
        vectors = vectors[np.sort(rows)]
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))


def index_stamp(directory: Path) -> tuple[int, int] | None:
    """(modification time in ns, size) of the index's ids file, written last by
    :meth:`FaissItemIndex.save`; None when there is none. A change means a new build."""
    try:
        stat = (directory / IDS_FILE).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class IndexFileError(RuntimeError):
    """An index directory is missing files or holds files this version cannot read."""


class FaissItemIndex(TableBacked):
    """Inner-product ANN index of item vectors keyed by string item ids.

    Args:
        dim: vector dimension d.
        factory: a faiss index factory string ("Flat", "HNSW32", "IVF1024,Flat", ...).
            Trainable types are trained on the first vectors added.
        device: CPU or GPU (from :func:`streamrec.index.device.choose_device`).
        compact_at: tombstone fraction above which the index is rebuilt.
        params: search-time parameters such as {"nprobe": 32} or {"efSearch": 128}.

    Example:
        >>> idx = FaissItemIndex(2)
        >>> idx.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
        >>> idx.search(np.array([[0, 1]], dtype=np.float32), 1)[0].item_ids
        ('b',)
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        device: Device | None = None,
        compact_at: float = 0.2,
        params: dict[str, int] | None = None,
    ) -> None:
        self._table = ItemTable(dim)
        self.factory = factory
        self.device = device or Device("cpu")
        self.compact_at = compact_at
        self.params = dict(params or {})
        self._index: Any = None
        self._gpu_resources: Any = None

    def upsert(self, item_ids: Sequence[str], vectors: FloatArray) -> None:
        """Add or replace items. vectors: (n, d)."""
        if not item_ids:
            return
        rows = self._table.append(item_ids, vectors)
        if self._index is None or self._table.dead_fraction > self.compact_at:
            self._rebuild()
        else:
            self._index.add(rows)

    def remove(self, item_ids: Sequence[str]) -> None:
        self._table.remove(item_ids)
        if self._table.dead_fraction > self.compact_at and len(self._table) > 0:
            self._rebuild()

    def search(self, queries: FloatArray, k: int) -> list[Hits]:
        """Top-k alive items per query row: (q, d) -> q hit lists of length <= k."""
        q = as_matrix(queries, self.dim)
        if self._index is None or len(self._table) == 0 or k <= 0:
            return [Hits((), ()) for _ in range(q.shape[0])]
        dead = self._table.rows - len(self._table)
        fetch = min(self._table.rows, k + dead)
        scores, rows = self._index.search(q, fetch)
        return [Hits(ids, kept) for ids, kept in self._table.hits(scores, rows, k)]

    def save(self, directory: Path) -> None:
        """Write the index, ids and vectors under ``directory`` (created if missing).

        Each file is written under a temporary name and renamed; the ids file, which
        :func:`index_stamp` watches, is renamed last, so a worker that sees it change
        finds the other two files complete.
        """
        directory.mkdir(parents=True, exist_ok=True)
        ids, vectors = self._table.live()
        compact = FaissItemIndex(self.dim, self.factory, Device("cpu"), params=self.params)
        compact.upsert(ids, vectors)
        with open(directory / f".{VECTORS_FILE}.partial", "wb") as fh:
            np.save(fh, vectors)
        (directory / f".{VECTORS_FILE}.partial").replace(directory / VECTORS_FILE)
        if compact._index is not None:
            faiss.write_index(compact._index, str(directory / f".{INDEX_FILE}.partial"))
            (directory / f".{INDEX_FILE}.partial").replace(directory / INDEX_FILE)
        else:
            (directory / INDEX_FILE).unlink(missing_ok=True)
        meta = {"format": 1, "dim": self.dim, "factory": self.factory, "params": self.params}
        (directory / f".{IDS_FILE}.partial").write_text(json.dumps({**meta, "item_ids": ids}))
        (directory / f".{IDS_FILE}.partial").replace(directory / IDS_FILE)

    @classmethod
    def load(cls, directory: Path, device: Device | None = None) -> FaissItemIndex:
        """Load an index written by :meth:`save`.

        Raises:
            IndexFileError: files are missing or unreadable.
        """
        ids_path = directory / IDS_FILE
        vec_path = directory / VECTORS_FILE
        if not ids_path.is_file() or not vec_path.is_file():
            msg = (
                f"no index in {directory}: expected {IDS_FILE} and {VECTORS_FILE}; "
                "build one with `streamrec index build`"
            )
            raise IndexFileError(msg)
        try:
            meta = json.loads(ids_path.read_text())
            vectors = np.load(vec_path)
        except (OSError, ValueError) as exc:
            msg = f"cannot read the index in {directory}: {exc}"
            raise IndexFileError(msg) from exc
        if meta.get("format") != 1:
            msg = f"{ids_path}: unsupported index format {meta.get('format')!r}, expected 1"
            raise IndexFileError(msg)
        index = cls(int(meta["dim"]), meta["factory"], device, params=meta.get("params"))
        ids = list(meta["item_ids"])
        built = directory / INDEX_FILE
        try:
            if built.is_file() and ids:
                index._load_built(ids, vectors, built)
            else:
                index.upsert(ids, vectors)
        except (IndexInputError, RuntimeError) as exc:
            msg = f"index files in {directory} disagree: {exc}"
            raise IndexFileError(msg) from exc
        return index

    def _load_built(self, ids: list[str], vectors: FloatArray, path: Path) -> None:
        """Use the saved FAISS index as it is (rows 0..n-1 are ``ids``): a large IVF or
        HNSW index is not trained or built again at every start."""
        self._table.append(ids, vectors)
        cpu = faiss.read_index(str(path))
        if cpu.ntotal != len(ids) or cpu.d != self.dim:
            msg = (
                f"{path.name} holds {cpu.ntotal} vectors of dimension {cpu.d}, "
                f"the ids file {len(ids)} of dimension {self.dim}"
            )
            raise IndexInputError(msg)
        self._apply_params(cpu)
        self._index = self._to_device(cpu)

    def _rebuild(self) -> None:
        ids, vectors = self._table.live()
        table = ItemTable(self.dim, capacity=max(len(ids), 1024))
        table.append(ids, vectors)
        self._table = table
        cpu = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if not cpu.is_trained:
            if len(ids) == 0:
                self._index = None
                return
            train(cpu, vectors)
        self._apply_params(cpu)
        index = self._to_device(cpu)
        if len(ids):
            index.add(vectors)
        self._index = index
        log.debug("rebuilt %s index with %d items on %s", self.factory, len(ids), self.device.kind)

    def _apply_params(self, index: Any) -> None:
        if not self.params:
            return
        space = faiss.ParameterSpace()
        for name, value in self.params.items():
            space.set_index_parameter(index, name, value)

    def _to_device(self, index: Any) -> Any:
        if not self.device.is_gpu:
            return index
        if self._gpu_resources is None:
            self._gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_resources, self.device.gpu_id, index)
