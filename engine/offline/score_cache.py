"""A file cache of a model's test scores, so an expensive baseline is trained once per split.

A cache entry holds the (u, n) float32 scores a recommender gave every test user of a split
over the ranked universe, plus a small JSON document (chosen parameters, validation score,
notes). Its key names the model, its parameters and a fingerprint of the split and universe,
so a changed split, universe or setting never reuses stale scores. Reading an entry back
yields a recommender that returns the stored row of each history: every metric is then
computed by the same code as for a freshly trained model.

Example:
    >>> key = cache_key("sasrec", split, universe, {"epochs": 200, "seed": 0})  # doctest: +SKIP
    >>> recommend = load_scores(cache_dir, key)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.engine.offline.evaluation import Recommender, Split

__all__ = ["CachedScores", "cache_key", "load_scores", "save_scores"]


def _history_key(items: Sequence[str], types: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update("\x1f".join(items).encode("utf-8"))
    h.update(b"\x1e")
    h.update("\x1f".join(types).encode("utf-8"))
    return h.hexdigest()


def cache_key(name: str, split: Split, universe: Sequence[str], params: Mapping[str, Any]) -> str:
    """``<name>-<16 hex digits>`` over the split, the universe and the parameters."""
    h = hashlib.blake2b(digest_size=8)
    for frame in (split.train, split.test):
        for column in ("user_id", "item_id", "type"):
            h.update("\x1f".join(frame[column].astype(str)).encode("utf-8"))
            h.update(b"\x1e")
    h.update("\x1f".join(universe).encode("utf-8"))
    h.update(json.dumps(dict(params), sort_keys=True, default=str).encode("utf-8"))
    return f"{name}-{h.hexdigest()}"


class CachedScores:
    """A recommender that answers from stored scores, looked up by the exact history.

    Raises:
        KeyError: (when called) a history that was not stored.
    """

    def __init__(
        self,
        rows: Mapping[str, int],
        scores: npt.NDArray[np.float32],
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.NDArray[np.float32]] | None = None,
    ) -> None:
        self.rows = dict(rows)
        self.scores = scores
        self.meta = dict(meta)
        self.arrays = dict(arrays or {})

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        picked = [self.rows[_history_key(h, t)] for h, t in zip(histories, types, strict=True)]
        out: npt.NDArray[np.float32] = self.scores[picked]
        return out


def save_scores(
    recommend: Recommender,
    split: Split,
    universe: Sequence[str],
    directory: Path,
    key: str,
    meta: Mapping[str, Any],
    batch_size: int = 512,
    arrays: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> CachedScores:
    """Score every test user once, write ``<key>.npz`` and ``<key>.json``, return the cache.

    Args:
        recommend: The trained recommender.
        split: The split whose test users are scored.
        universe: The ranked items, in column order.
        directory: The cache folder (created if needed).
        key: From :func:`cache_key`.
        meta: JSON-ready notes kept with the scores.
        batch_size: Users scored per call.
        arrays: Extra named float32 arrays kept with the scores.

    Returns:
        A recommender over the stored scores.
    """
    histories, types = split.histories()
    parts = [
        np.asarray(recommend(histories[i : i + batch_size], types[i : i + batch_size]))
        for i in range(0, len(histories), batch_size)
    ]
    scores = (
        np.concatenate(parts).astype(np.float32)
        if parts
        else np.zeros((0, len(universe)), dtype=np.float32)
    )
    rows = {_history_key(h, t): r for r, (h, t) in enumerate(zip(histories, types, strict=True))}
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".scores-", suffix=".npz", dir=directory)
    with os.fdopen(fd, "wb") as fh:
        stored: dict[str, npt.NDArray[Any]] = {"scores": scores}
        stored |= {f"extra.{k}": v for k, v in (arrays or {}).items()}
        np.savez_compressed(fh, **stored)  # type: ignore[arg-type]
    Path(tmp).replace(directory / f"{key}.npz")
    document = {"key": key, "rows": rows, "meta": dict(meta)}
    (directory / f"{key}.json").write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
    return CachedScores(rows, scores, meta, arrays)


def load_scores(directory: Path, key: str) -> CachedScores | None:
    """The cached scores under ``key``, or None when absent or unreadable."""
    npz, doc = directory / f"{key}.npz", directory / f"{key}.json"
    if not (npz.is_file() and doc.is_file()):
        return None
    try:
        document = json.loads(doc.read_text(encoding="utf-8"))
        with np.load(npz, allow_pickle=False) as data:
            scores = data["scores"].astype(np.float32, copy=False)
            arrays = {
                k.removeprefix("extra."): data[k] for k in data.files if k.startswith("extra.")
            }
    except (OSError, ValueError, KeyError):
        return None
    if document.get("key") != key or len(document.get("rows", {})) > len(scores):
        return None
    return CachedScores(document["rows"], scores, document.get("meta", {}), arrays)
