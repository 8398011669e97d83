"""The model's files: ``model.json`` (format, version, parameters, metrics) and
``model.npz`` (arrays), how they are checked on reading, and the version string.

The version is ``item2vec-<UTC YYYYmmddHHMMSS>-<8 hex digits of a content hash>``
(``seqrec-`` with a sequential encoder); loading recomputes the hash, so a ``model.npz``
that does not belong to its ``model.json`` is refused.

Errors::

    ModelError                       root of the model-file errors
    ├── ModelNotFoundError           (also FileNotFoundError) folder or file missing
    └── ModelFormatError             (also ValueError) a file is not a model of this format
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.adaptation import AdaptationParams
from streamrec.engine.serving.content import FEATURIZERS, HASHING, HASHING_FEATURES, ContentEncoder
from streamrec.engine.serving.ranker import CoTable, LinearRanker
from streamrec.engine.serving.scoring import ScoringParams
from streamrec.engine.serving.sequential import SequenceEncoder
from streamrec.engine.serving.user_embedding import UserEmbeddingParams

MODEL_FORMAT = "streamrec-item-model"
FORMAT_VERSION = 1
ARRAYS_FILE = "model.npz"
META_FILE = "model.json"
VERSION_PREFIX = "item2vec"
SEQUENCE_VERSION_PREFIX = "seqrec"


class ModelError(Exception):
    """Root of the model-file errors."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model folder or one of its files does not exist."""


class ModelFormatError(ModelError, ValueError):
    """A model file is unreadable or not in the expected format."""


def user_params_dict(p: UserEmbeddingParams) -> dict[str, Any]:
    return {"max_history": p.max_history, "decay": p.decay, "weights": p.weights.as_dict()}


def content_hash(
    item_ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    popularity: npt.NDArray[np.float32],
    user_params: UserEmbeddingParams,
    scoring: ScoringParams,
    content: ContentEncoder | None,
    sequence: tuple[SequenceEncoder, float] | None = None,
    adapt: AdaptationParams | None = None,
    ranker: tuple[LinearRanker, CoTable] | None = None,
    prices: npt.NDArray[np.float32] | None = None,
) -> str:
    h = hashlib.blake2b(digest_size=4)
    h.update("\n".join(item_ids).encode("utf-8"))
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(popularity, dtype=np.float32).tobytes())
    params = {
        "user": user_params_dict(user_params),
        "popularity_weight": scoring.popularity_weight,
    }
    h.update(json.dumps(params, sort_keys=True).encode("utf-8"))
    if content is not None:
        h.update(np.ascontiguousarray(content.weights).tobytes())
        if content.features != HASHING_FEATURES:  # hashing models keep their earlier hashes
            h.update(f"content.features={content.features}".encode())
    if sequence is not None:
        encoder, weight = sequence
        h.update(json.dumps({"sequence": encoder.params.as_dict(), "weight": weight}).encode())
        h.update(encoder.to_bytes())
    if adapt is not None and adapt.enabled:  # models without it keep their earlier hashes
        h.update(json.dumps({"adaptation": adapt.as_dict()}, sort_keys=True).encode())
    if ranker is not None:
        scorer, table = ranker
        h.update(json.dumps({"ranker": scorer.params()}, sort_keys=True).encode())
        for value in (*scorer.arrays().values(), table.partners, table.counts):
            h.update(np.ascontiguousarray(value).tobytes())
    if prices is not None:  # models without prices keep their earlier hashes
        h.update(b"prices")
        h.update(np.ascontiguousarray(prices, dtype=np.float32).tobytes())
    return h.hexdigest()


def require_aware(now: datetime, name: str) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        msg = f"{name} must be a timezone-aware datetime, got naive {now.isoformat()}"
        raise ValueError(msg)
    return now.astimezone(UTC)


def make_version(
    now: datetime,
    item_ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    popularity: npt.NDArray[np.float32],
    user_params: UserEmbeddingParams,
    scoring: ScoringParams,
    content: ContentEncoder | None = None,
    sequence: tuple[SequenceEncoder, float] | None = None,
    adapt: AdaptationParams | None = None,
    ranker: tuple[LinearRanker, CoTable] | None = None,
    prices: npt.NDArray[np.float32] | None = None,
) -> str:
    """``item2vec-<UTC YYYYmmddHHMMSS>-<8 hex digits of a hash of the model's content>``.

    Args:
        now: Creation time, timezone-aware.
        item_ids: (n,) item ids.
        vectors: (n, d) item vectors.
        popularity: (n,) interaction counts.
        user_params: User embedding parameters.
        scoring: Scoring parameters.
        content: The content encoder, if any.
        sequence: The sequential encoder and its score weight, if any.
        adapt: The per-user adaptation, if any.
        ranker: The second-stage ranker and its co-occurrence table, if any.
        prices: (n,) item prices, if the catalog had any.

    Returns:
        The version string.

    Raises:
        ValueError: ``now`` is naive.
    """
    stamp = require_aware(now, "now").strftime("%Y%m%d%H%M%S")
    digest = content_hash(
        item_ids, vectors, popularity, user_params, scoring, content, sequence, adapt, ranker,
        prices,
    )  # fmt: skip
    prefix = VERSION_PREFIX if sequence is None else SEQUENCE_VERSION_PREFIX
    return f"{prefix}-{stamp}-{digest}"


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path} is not valid JSON: {exc}"
        raise ModelFormatError(msg) from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        msg = f"{path}: field 'format' must be {MODEL_FORMAT!r}, got {got!r}"
        raise ModelFormatError(msg)
    if meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version")
        msg = f"{path}: field 'format_version' must be {FORMAT_VERSION}, got {got!r}"
        raise ModelFormatError(msg)
    required = ("version", "created_at", "user_params", "scoring", "content", "dim", "n_items")
    missing = [k for k in required if k not in meta]
    if missing:
        msg = f"{path}: missing field(s) {', '.join(missing)}"
        raise ModelFormatError(msg)
    content = meta["content"]
    if content is not None:
        features = content.get("features", HASHING_FEATURES)
        if features not in FEATURIZERS:
            msg = (
                f"{path}: field 'content.features' must be one of {', '.join(FEATURIZERS)}, "
                f"got {features!r}"
            )
            raise ModelFormatError(msg)
        if features == HASHING_FEATURES and content.get("hashing") != HASHING:
            got = content.get("hashing")
            msg = f"{path}: field 'content.hashing' must be {HASHING!r}, got {got!r}"
            raise ModelFormatError(msg)
    return meta


def read_arrays(
    path: Path, *, with_content: bool, with_sequence: bool, with_ranker: bool = False
) -> dict[str, npt.NDArray[Any]]:
    names = ["vectors", "popularity", "item_ids", "item_categories"]
    if with_content:
        names.append("content_weights")
    if with_ranker:
        names += [
            "ranker.weights",
            "ranker.mean",
            "ranker.std",
            "cotable.partners",
            "cotable.counts",
        ]
    try:
        with np.load(path, allow_pickle=False) as data:
            if with_sequence:
                names += [n for n in data.files if n.startswith("seq.")]
            if "item_prices" in data.files:
                names.append("item_prices")
            missing = [n for n in names if n not in data.files]
            if missing:
                msg = f"{path}: missing array(s) {', '.join(missing)}"
                raise ModelFormatError(msg)
            return {n: data[n] for n in names}
    except (OSError, ValueError, EOFError) as exc:
        msg = f"{path} is not a readable .npz file: {exc}"
        raise ModelFormatError(msg) from exc
