"""The trained item model: item vectors, popularity, and how to embed and score a user.

An :class:`ItemModel` is what training produces and what the streaming worker serves. Its
methods wrap the shared functions of :mod:`streamrec.engine.serving.user_embedding`,
:mod:`streamrec.engine.serving.scoring` and :mod:`streamrec.engine.serving.candidates`, so
evaluation and serving compute a user's vector and scores identically.

On disk a model is a folder with two files, ``model.npz`` (arrays) and ``model.json``
(format, version, creation time, dimensions, parameters, metrics); the format, its checks,
the version string and the errors are in :mod:`streamrec.engine.serving.model_files`.

Example:
    >>> model = ItemModel.load(Path("models/current"))  # doctest: +SKIP
    >>> u = model.embed_user(["i1", "i7"], ["view", "purchase"])  # doctest: +SKIP
    >>> scores = model.score(u)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.adaptation import AdaptationParams
from streamrec.engine.serving.candidates import (
    embed_histories,
    history_window,
)
from streamrec.engine.serving.content import HASHING, HASHING_FEATURES, ContentEncoder
from streamrec.engine.serving.features import candidate_features
from streamrec.engine.serving.model_files import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    META_FILE,
    MODEL_FORMAT,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    content_hash,
    make_version,
    read_arrays,
    read_meta,
    require_aware,
    user_params_dict,
)
from streamrec.engine.serving.ranker import (
    CandidateContext,
    CoTable,
    LinearRanker,
    RankerSettings,
)
from streamrec.engine.serving.scoring import (
    ScoringParams,
    normalised_log_popularity,
    score_items_batch,
)
from streamrec.engine.serving.sequential import SequenceEncoder, SequenceParams
from streamrec.engine.serving.text_encoders import TextEmbedder, load_embedder
from streamrec.engine.serving.user_embedding import (
    EVENT_TYPES,
    EventWeights,
    UserEmbeddingParams,
    contributions,
)

__all__ = [
    "ARRAYS_FILE",
    "FORMAT_VERSION",
    "META_FILE",
    "MODEL_FORMAT",
    "ItemModel",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "make_version",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ItemModel:
    """Item vectors and everything needed to embed a user and score items.

    Attributes:
        version: ``item2vec-<UTC timestamp>-<content hash>`` (see :func:`make_version`).
        item_ids: (n,) item ids, row order of the arrays.
        vectors: (n, d) float32 item vectors, unit L2 norm (zero rows for items without any
            signal).
        popularity: (n,) float32 training interaction counts.
        user_params: How a user's history becomes a vector.
        scoring: How items are scored for a user.
        content: Encoder for cold-start items, or None when trained without a catalog.
        item_categories: (n,) each item's category ("" when unknown).
        created_at: When the model was trained (timezone-aware).
        metrics: Validation metrics recorded at training time.
        hyperparameters: The training hyperparameters chosen on validation.
        encoder: The sequential user encoder (:mod:`streamrec.engine.serving.sequential`), or None.
            With an
            encoder a user's query vector is ``[linear user vector, encoder output]`` and
            an item's index vector is ``[item vector, sequence_weight * encoder item
            embedding]``, so one inner product adds both scores.
        sequence_weight: The weight of the encoder's score, tuned on validation.
        adaptation: The per-user online adaptation (:mod:`streamrec.engine.serving.adaptation`)
            added to the
            linear user vector; off unless training found it helps on validation.
        ranker: The learned second stage (:mod:`streamrec.engine.serving.ranker`) that re-orders
            the best
            candidates, or None (the model's score order is served).
        cotable: The co-occurrence table the ranker's features read (with ``ranker``).
        item_prices: (n,) float32 prices from the training catalog (NaN when unknown), or
            None when it had none.
    """

    version: str
    item_ids: tuple[str, ...]
    vectors: npt.NDArray[np.float32] = field(repr=False)
    popularity: npt.NDArray[np.float32] = field(repr=False)
    user_params: UserEmbeddingParams
    scoring: ScoringParams
    content: ContentEncoder | None = field(repr=False)
    item_categories: tuple[str, ...] = field(repr=False)
    created_at: datetime
    metrics: Mapping[str, float] = field(default_factory=dict, repr=False)
    hyperparameters: Mapping[str, float] = field(default_factory=dict, repr=False)
    encoder: SequenceEncoder | None = field(default=None, repr=False)
    sequence_weight: float = 0.0
    adaptation: AdaptationParams = field(default_factory=AdaptationParams)
    ranker: LinearRanker | None = field(default=None, repr=False)
    cotable: CoTable | None = field(default=None, repr=False)
    item_prices: npt.NDArray[np.float32] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.vectors.dtype != np.float32 or self.vectors.ndim != 2 or len(self.vectors) != n:
            msg = (
                f"ItemModel.vectors must be float32 of shape ({n}, d), "
                f"got {self.vectors.dtype} {self.vectors.shape}"
            )
            raise ValueError(msg)
        if self.popularity.dtype != np.float32 or self.popularity.shape != (n,):
            msg = (
                f"ItemModel.popularity must be float32 of shape ({n},), "
                f"got {self.popularity.dtype} {self.popularity.shape}"
            )
            raise ValueError(msg)
        if len(self.item_categories) != n:
            msg = (
                f"ItemModel.item_categories must have {n} entries, got {len(self.item_categories)}"
            )
            raise ValueError(msg)
        if len(set(self.item_ids)) != n:
            msg = "ItemModel.item_ids must be unique"
            raise ValueError(msg)
        if self.content is not None and self.content.dim != self.dim:
            msg = f"ItemModel.content must encode to d={self.dim}, got {self.content.dim}"
            raise ValueError(msg)
        require_aware(self.created_at, "ItemModel.created_at")
        if self.encoder is not None and self.encoder.n_items != n:
            msg = f"ItemModel.encoder must know the {n} items, got {self.encoder.n_items}"
            raise ValueError(msg)
        if (self.ranker is None) != (self.cotable is None):
            msg = "ItemModel.ranker and ItemModel.cotable come together"
            raise ValueError(msg)
        if self.cotable is not None and len(self.cotable.partners) != n:
            msg = f"ItemModel.cotable must cover the {n} items, got {len(self.cotable.partners)}"
            raise ValueError(msg)
        if self.item_prices is not None and (
            self.item_prices.dtype != np.float32 or self.item_prices.shape != (n,)
        ):
            msg = (
                f"ItemModel.item_prices must be float32 of shape ({n},), "
                f"got {self.item_prices.dtype} {self.item_prices.shape}"
            )
            raise ValueError(msg)
        if not math.isfinite(self.sequence_weight) or self.sequence_weight < 0:
            msg = f"ItemModel.sequence_weight must be finite and >= 0, got {self.sequence_weight}"
            raise ValueError(msg)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return int(self.vectors.shape[1])

    @property
    def sequence_dim(self) -> int:
        """Dimension of the encoder's part of a query vector (0 without an encoder)."""
        return 0 if self.encoder is None else self.encoder.dim

    @property
    def query_dim(self) -> int:
        """Dimension of a user's query vector: d plus the encoder's dimension."""
        return self.dim + self.sequence_dim

    @cached_property
    def index_vectors(self) -> npt.NDArray[np.float32]:
        """(n, query_dim) item vectors scored against :meth:`embed_user`'s query vectors."""
        if self.encoder is None:
            return self.vectors
        seq = self.encoder.item_vectors() * np.float32(self.sequence_weight)
        return np.concatenate([self.vectors, seq], axis=1).astype(np.float32)

    @property
    def n_items(self) -> int:
        """Number of items n."""
        return len(self.item_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """Row of each item id."""
        return {item: i for i, item in enumerate(self.item_ids)}

    @cached_property
    def log_popularity(self) -> npt.NDArray[np.float32]:
        """(n,) normalised log popularity used by the scoring function."""
        return normalised_log_popularity(self.popularity)

    def rows(self, item_ids: Sequence[str]) -> npt.NDArray[np.intp]:
        """(h,) the rows of ``item_ids``; -1 for items the model does not know."""
        get = self.index.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.intp, count=len(item_ids))

    def history(
        self, item_ids: Sequence[str], types: Sequence[str]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The rows and weights of a user's history that count for their vector.

        Only the last ``max_history`` events count; their weights come from
        :func:`streamrec.engine.serving.user_embedding.history_weights` (ages count every event),
        then events on
        items unknown to the model are dropped.

        Args:
            item_ids: (h,) the history's items, oldest first.
            types: (h,) the matching event types.

        Returns:
            ``(rows (h',), weights (h',))`` for the known items among the last events.

        Raises:
            ValueError: The lengths differ or a type is unknown.
        """
        if len(item_ids) != len(types):
            msg = (
                "item_ids and types must have the same length, "
                f"got {len(item_ids)} and {len(types)}"
            )
            raise ValueError(msg)
        start, weights = history_window(types, self.user_params)
        rows = self.rows(item_ids[start:])
        known = rows >= 0
        return rows[known], weights[known]

    def sequence_rows(
        self, item_ids: Sequence[str], types: Sequence[str]
    ) -> tuple[list[int], list[str]]:
        """The encoder's input: rows and types of the history's known items, oldest first.

        Args:
            item_ids: (h,) the history's items, oldest first.
            types: (h,) the matching event types.

        Returns:
            ``(rows, types)`` of the last ``max_len`` events on items the model knows.
        """
        if self.encoder is None:
            return [], []
        get = self.index.get
        rows: list[int] = []
        kinds: list[str] = []
        for item, kind in zip(item_ids, types, strict=True):
            row = get(item)
            if row is not None:
                rows.append(row)
                kinds.append(kind)
        limit = self.encoder.params.max_len
        return rows[-limit:], kinds[-limit:]

    def embed_users(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        """(u, query_dim) query vectors for a batch of histories (see :meth:`embed_user`)."""
        known = [self.history(h, t) for h, t in zip(histories, types, strict=True)]
        return embed_histories(
            self,
            [self.vectors[rows] for rows, _ in known],
            [weights for _, weights in known],
            [self.sequence_rows(h, t) for h, t in zip(histories, types, strict=True)],
        )

    def embed_user(self, item_ids: Sequence[str], types: Sequence[str]) -> npt.NDArray[np.float32]:
        """The user's query vector from their history (oldest first).

        Without an encoder: the linear user vector (unit norm, zero for no known items).
        With one: ``[linear user vector, encoder output]`` of dimension ``query_dim``.

        Args:
            item_ids: (h,) the history's items, oldest first.
            types: (h,) the matching event types.

        Returns:
            (query_dim,) float32.
        """
        user: npt.NDArray[np.float32] = self.embed_users([item_ids], [types])[0]
        return user

    def score(
        self, user_vec: npt.NDArray[np.floating], rows: npt.NDArray[np.intp] | None = None
    ) -> npt.NDArray[np.float32]:
        """Scores of all items, or of the items at ``rows``, for one user.

        Args:
            user_vec: (d,) from :meth:`embed_user`.
            rows: (m,) candidate rows (e.g. from the ANN index); None for all items.

        Returns:
            (n,) or (m,) float32 scores.
        """
        items = self.index_vectors if rows is None else self.index_vectors[rows]
        pop = self.log_popularity if rows is None else self.log_popularity[rows]
        user = np.asarray(user_vec, dtype=np.float32)[None, :]
        scores: npt.NDArray[np.float32] = score_items_batch(user, items, pop, self.scoring)[0]
        return scores

    def explain(
        self, item_ids: Sequence[str], types: Sequence[str], candidate: str
    ) -> list[tuple[str, float]]:
        """Which history items made ``candidate`` score high, strongest first.

        Contributions of repeated items are added up; they sum to the cosine part of the
        candidate's score.

        Args:
            item_ids: (h,) the history's items, oldest first.
            types: (h,) the matching event types.
            candidate: The recommended item's id.

        Returns:
            ``[(history item id, contribution), ...]`` sorted by contribution, descending.

        Raises:
            KeyError: ``candidate`` is not in the model.
        """
        if candidate not in self.index:
            msg = f"candidate item {candidate!r} is not in model {self.version}"
            raise KeyError(msg)
        rows, weights = self.history(item_ids, types)
        parts = contributions(self.vectors[rows], weights, self.vectors[self.index[candidate]])
        totals: dict[str, float] = {}
        for row, value in zip(rows.tolist(), parts.tolist(), strict=True):
            item = self.item_ids[row]
            totals[item] = totals.get(item, 0.0) + value
        return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)

    def item_price(self, row: int) -> float:
        """The price of a model row (NaN when unknown or no row)."""
        if self.item_prices is None or row < 0:
            return math.nan
        return float(self.item_prices[row])

    def ranker_features(
        self,
        scores: npt.NDArray[np.floating],
        candidates: npt.NDArray[np.intp],
        sources: npt.NDArray[np.bool_],
        categories: Sequence[str],
        prices: npt.NDArray[np.floating],
        user: CandidateContext,
        table: CoTable | None = None,
        settings: RankerSettings | None = None,
    ) -> npt.NDArray[np.float64]:
        """:func:`streamrec.engine.serving.features.candidate_features` with this model's
        popularity, and its co-occurrence table and ranker settings unless ``table`` /
        ``settings`` are given (training, before the model has a ranker). Candidate rows
        -1: items the model has no row for."""
        if table is None:
            table = self.cotable
        if settings is None and self.ranker is not None:
            settings = self.ranker.settings
        if table is None or settings is None:
            msg = f"model {self.version} has no ranker"
            raise ValueError(msg)
        known = candidates >= 0
        pop = np.where(known, self.log_popularity[np.where(known, candidates, 0)], 0.0)
        return candidate_features(
            scores, candidates, sources, categories, prices, pop, user, table,
            session=settings.session, category_window=settings.category_window,
        )  # fmt: skip

    def content_parts(self) -> tuple[Any, ...]:
        """Everything the content hash of the version covers, in :func:`content_hash`
        order (also the tail of :func:`make_version`'s arguments)."""
        return (
            self.item_ids,
            self.vectors,
            self.popularity,
            self.user_params,
            self.scoring,
            self.content,
            None if self.encoder is None else (self.encoder, self.sequence_weight),
            self.adaptation,
            None if self.ranker is None or self.cotable is None else (self.ranker, self.cotable),
            self.item_prices,
        )

    def metadata(self) -> dict[str, Any]:
        """The content of ``model.json``."""
        return {
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "n_items": self.n_items,
            "dim": self.dim,
            "user_params": user_params_dict(self.user_params),
            "scoring": {"popularity_weight": self.scoring.popularity_weight},
            "content": None
            if self.content is None
            else {
                "features": self.content.features,
                # None for a sentence encoder, so a reader that only knows hashing refuses it.
                "hashing": HASHING if self.content.features == HASHING_FEATURES else None,
                "n_features": self.content.n_features,
                "ridge": self.content.ridge,
            },
            "sequence": None
            if self.encoder is None
            else {"params": self.encoder.params.as_dict(), "weight": self.sequence_weight},
            "adaptation": self.adaptation.as_dict() if self.adaptation.enabled else None,
            "ranker": None if self.ranker is None else self.ranker.params(),
            "hyperparameters": dict(self.hyperparameters),
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
        }

    def save(self, directory: Path) -> None:
        """Write ``model.npz`` and ``model.json`` into ``directory`` (created if needed).

        Each file is written to a temporary name and renamed, so a reader never sees half a
        file; ``model.json`` is renamed last.

        Args:
            directory: The model folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, npt.NDArray[Any]] = {
            "vectors": self.vectors,
            "popularity": self.popularity,
            "item_ids": np.asarray(self.item_ids, dtype=np.str_),
            "item_categories": np.asarray(self.item_categories, dtype=np.str_),
        }
        if self.content is not None:
            arrays["content_weights"] = self.content.weights
        if self.encoder is not None:
            arrays.update(self.encoder.state_arrays())
        if self.ranker is not None and self.cotable is not None:
            arrays.update(self.ranker.arrays())
            arrays["cotable.partners"] = self.cotable.partners
            arrays["cotable.counts"] = self.cotable.counts
        if self.item_prices is not None:
            arrays["item_prices"] = self.item_prices
        fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".npz", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        Path(tmp_name).replace(directory / ARRAYS_FILE)
        fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".json", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.metadata(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        Path(tmp_name).replace(directory / META_FILE)
        logger.info("saved model %s to %s", self.version, directory)

    @classmethod
    def load(cls, directory: Path) -> ItemModel:
        """Read a model written by :meth:`save`.

        Args:
            directory: The model folder.

        Returns:
            The model.

        Raises:
            ModelNotFoundError: The folder, ``model.json`` or ``model.npz`` is missing.
            ModelFormatError: A file is not in this format or the arrays do not belong to the
                metadata.
            streamrec.engine.serving.text_encoders.EmbedderNotInstalledError: The content encoder
            uses a
                sentence encoder whose package is not installed.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        arrays_path = directory / ARRAYS_FILE
        for p in (meta_path, arrays_path):
            if not p.is_file():
                msg = f"model file {p} does not exist"
                raise ModelNotFoundError(msg)
        meta = read_meta(meta_path)
        arrays = read_arrays(
            arrays_path,
            with_content=meta["content"] is not None,
            with_sequence=meta.get("sequence") is not None,
            with_ranker=meta.get("ranker") is not None,
        )
        try:
            model = _model_from(meta, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{directory}: model.json and model.npz do not form a valid model: {exc}"
            raise ModelFormatError(msg) from exc
        digest = content_hash(*model.content_parts())
        if not model.version.endswith(f"-{digest}"):
            msg = (
                f"{arrays_path} does not belong to {meta_path}: version {model.version!r} "
                f"expects content hash {model.version.rsplit('-', 1)[-1]!r}, "
                f"the files hash to {digest!r}"
            )
            raise ModelFormatError(msg)
        return model


def _content_embedder(features: str) -> TextEmbedder | None:
    """The sentence encoder a saved content encoder needs (None for hashing).

    Raises:
        streamrec.engine.serving.text_encoders.EmbedderNotInstalledError: Its package is not
        installed.
    """
    return None if features == HASHING_FEATURES else load_embedder(features)


def _model_from(meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> ItemModel:
    up = meta["user_params"]
    user_params = UserEmbeddingParams(
        max_history=int(up["max_history"]),
        decay=float(up["decay"]),
        weights=EventWeights(**{t: float(up["weights"][t]) for t in EVENT_TYPES}),
    )
    content_meta = meta["content"]
    content = (
        None
        if content_meta is None
        else ContentEncoder(
            weights=arrays["content_weights"].astype(np.float32, copy=False),
            ridge=float(content_meta["ridge"]),
            embedder=_content_embedder(str(content_meta.get("features", HASHING_FEATURES))),
        )
    )
    vectors = arrays["vectors"]
    sequence = meta.get("sequence")
    encoder = (
        None
        if sequence is None
        else SequenceEncoder.from_arrays(
            arrays, SequenceParams(**sequence["params"]), int(meta["n_items"])
        )
    )
    if vectors.shape != (int(meta["n_items"]), int(meta["dim"])):
        expected = (meta["n_items"], meta["dim"])
        msg = f"vectors have shape {vectors.shape}, model.json says {expected}"
        raise ValueError(msg)
    return ItemModel(
        version=str(meta["version"]),
        item_ids=tuple(str(i) for i in arrays["item_ids"].tolist()),
        vectors=vectors,
        popularity=arrays["popularity"],
        user_params=user_params,
        scoring=ScoringParams(popularity_weight=float(meta["scoring"]["popularity_weight"])),
        content=content,
        item_categories=tuple(str(c) for c in arrays["item_categories"].tolist()),
        created_at=datetime.fromisoformat(str(meta["created_at"])),
        metrics={
            k: float("nan") if v is None else float(v) for k, v in meta.get("metrics", {}).items()
        },
        hyperparameters={k: float(v) for k, v in meta.get("hyperparameters", {}).items()},
        encoder=encoder,
        sequence_weight=0.0 if sequence is None else float(sequence["weight"]),
        adaptation=AdaptationParams(**(meta.get("adaptation") or {})),
        ranker=None
        if meta.get("ranker") is None
        else LinearRanker.from_arrays(arrays, meta["ranker"]),
        cotable=None
        if meta.get("ranker") is None
        else CoTable(
            arrays["cotable.partners"].astype(np.int32, copy=False),
            arrays["cotable.counts"].astype(np.int32, copy=False),
        ),
        item_prices=arrays.get("item_prices"),
    )
