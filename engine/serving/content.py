"""Content encoder: item vectors for items nobody has interacted with yet (cold start).

An item's text (title, category, tags, description) becomes tokens: lowercased word unigrams
of the title and description, ``cat:<category>``, ``tag:<tag>`` and a constant bias token.
Tokens are hashed with a stable signed hash (BLAKE2b, never Python's salted ``hash``) into
``n_features`` (2**14) sparse features, each row L2-normalised. A linear map ``W`` of shape
(n_features, d) is fitted by ridge regression from the training items' features to their
learned vectors, so a new item lands near the items whose text resembles it.

Instead of hashing, the features can come from a packaged sentence encoder
(:mod:`streamrec.engine.serving.text_encoders`: "minilm" or "e5"): the item's fields are joined
into one text
(:func:`streamrec.engine.serving.text_encoders.item_text`), embedded into 384 dimensions, and ``W``
of shape
(384, d) is fitted by the same ridge regression. The encoder records which featurizer it used
(:attr:`ContentEncoder.features`), and a saved model reloads the same one.

Example:
    >>> import numpy as np
    >>> targets = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> enc = ContentEncoder.fit(
    ...     [("Alien", "Sci-Fi", ["space"], ""), ("Heat", "Crime", ["heist"], "")], targets
    ... )
    >>> v = enc.encode("Aliens", "Sci-Fi", ["space"], "")
    >>> int(np.argmax(v))
    0
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import lsmr

from streamrec.engine.serving.text_encoders import TextEmbedder, item_text

__all__ = [
    "DEFAULT_N_FEATURES",
    "FEATURIZERS",
    "HASHING",
    "HASHING_FEATURES",
    "ContentEncoder",
    "ContentFeatures",
    "Featurizer",
    "ItemText",
    "content_features",
    "content_tokens",
    "has_text",
    "hash_features",
]

logger = logging.getLogger(__name__)

#: Default size of the hashed feature space.
DEFAULT_N_FEATURES = 2**14
#: Name of the hashing scheme; saved with a model and checked on load.
HASHING = "blake2b64-signed-v1"
#: Catalogs up to this many training items use the exact dual ridge solve; larger ones LSMR.
DUAL_SOLVE_MAX_ITEMS = 10_000

_WORD = re.compile(r"[^\W_]+")
_BIAS = "__bias__"

#: One item's text: (title, category, tags, description).
ItemText = tuple[str, str, Sequence[str], str]
#: Where the content features come from: hashed tokens or a packaged sentence encoder.
Featurizer = Literal["hashing", "minilm", "e5"]
#: Every featurizer name, as saved in a model's ``content.features``.
FEATURIZERS: tuple[str, ...] = get_args(Featurizer)
#: The featurizer name of the hashed bag of tokens (the default).
HASHING_FEATURES = "hashing"
#: Features of m items: (m, D) sparse hashed features or (m, dim) dense sentence embeddings.
ContentFeatures: TypeAlias = sp.csr_matrix | npt.NDArray[np.float32]


def has_text(
    item_id: str, title: str, category: str, tags: Iterable[str], description: str
) -> bool:
    """Whether an item has text that says something about it: a category, a tag, a
    description, or a title that is more than its id.

    An item without text gets no content vector (a vector hashed from its id would place
    it at random) and so no reason built on one: a catalog of bare ids is served from
    interactions alone.

    Example:
        >>> has_text("p42", "p42", "", [], "")
        False
        >>> has_text("p42", "Trail Runner 3", "", [], "")
        True
    """
    if category.strip() or description.strip() or any(t.strip() for t in tags):
        return True
    words = _WORD.findall(title.lower())
    return bool(words) and words != _WORD.findall(item_id.lower())


def content_tokens(title: str, category: str, tags: Iterable[str], description: str) -> list[str]:
    """The tokens an item's text is hashed from.

    Args:
        title: Item title.
        category: Item category ("" when unknown).
        tags: Item tags.
        description: Free-text description.

    Returns:
        Lowercased word unigrams of title and description, ``cat:<category>``,
        ``tag:<tag>`` for each tag, and a bias token present on every item.

    Example:
        >>> content_tokens("Toy Story", "Animation", ["Comedy", "1995"], "")
        ['toy', 'story', 'cat:animation', 'tag:comedy', 'tag:1995', '__bias__']
    """
    tokens = _WORD.findall(title.lower()) + _WORD.findall(description.lower())
    cat = category.strip().lower()
    if cat:
        tokens.append(f"cat:{cat}")
    tokens.extend(f"tag:{t.strip().lower()}" for t in tags if t.strip())
    tokens.append(_BIAS)
    return tokens


def _hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def hash_features(
    token_lists: Sequence[Sequence[str]], n_features: int = DEFAULT_N_FEATURES
) -> sp.csr_matrix:
    """Signed feature hashing of token lists, each row L2-normalised.

    Args:
        token_lists: m lists of tokens.
        n_features: Size D of the hashed feature space.

    Returns:
        (m, D) float64 CSR matrix.
    """
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, tokens in enumerate(token_lists):
        for token in tokens:
            h = _hash(token)
            rows.append(r)
            cols.append(h % n_features)
            vals.append(1.0 if (h >> 63) == 0 else -1.0)
    x = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
        shape=(len(token_lists), n_features),
    )
    x.sum_duplicates()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    result: sp.csr_matrix = sp.csr_matrix(sp.diags(scale) @ x)
    return result


def content_features(
    texts: Sequence[ItemText],
    *,
    embedder: TextEmbedder | None = None,
    n_features: int = DEFAULT_N_FEATURES,
) -> ContentFeatures:
    """The features a content encoder maps from.

    Args:
        texts: m items' (title, category, tags, description).
        embedder: Sentence encoder, or None for hashed tokens.
        n_features: Size D of the hashed feature space (without an embedder).

    Returns:
        (m, D) float64 CSR hashed features, or (m, embedder.dim) float32 unit-norm embeddings
        of :func:`streamrec.engine.serving.text_encoders.item_text`.
    """
    if embedder is None:
        return hash_features([content_tokens(*t) for t in texts], n_features)
    return embedder.embed([item_text(*t) for t in texts])


def _normalise_rows(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
    result: npt.NDArray[np.float32] = out.astype(np.float32)
    return result


@dataclass(frozen=True, eq=False)
class ContentEncoder:
    """Maps item text to the learned item-vector space.

    Attributes:
        weights: (n_features, d) float32 linear map from features to vectors.
        ridge: The L2 penalty it was fitted with.
        embedder: Sentence encoder the features come from (n_features = its dim), or None
            for hashed tokens.
    """

    weights: npt.NDArray[np.float32]
    ridge: float = 1.0
    embedder: TextEmbedder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.dtype != np.float32:
            msg = (
                "ContentEncoder.weights must be a float32 array of shape (n_features, d), "
                f"got {self.weights.dtype} {self.weights.shape}"
            )
            raise ValueError(msg)
        if self.embedder is not None and self.weights.shape[0] != self.embedder.dim:
            msg = (
                f"ContentEncoder.weights must have {self.embedder.dim} rows for text embedder "
                f"{self.embedder.name!r}, got shape {self.weights.shape}"
            )
            raise ValueError(msg)

    @property
    def features(self) -> str:
        """Featurizer name: ``"hashing"``, or the sentence embedder's name."""
        return HASHING_FEATURES if self.embedder is None else self.embedder.name

    @property
    def n_features(self) -> int:
        """Size D of the feature space (hashed, or the embedder's dimension)."""
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        """Dimension d of the output vectors."""
        return int(self.weights.shape[1])

    @classmethod
    def fit(
        cls,
        texts: Sequence[ItemText],
        targets: npt.NDArray[np.floating],
        *,
        n_features: int = DEFAULT_N_FEATURES,
        ridge: float = 1.0,
        embedder: TextEmbedder | None = None,
    ) -> ContentEncoder:
        """Fit ``W`` by ridge regression: ``min ||X W - Y||^2 + ridge * ||W||^2``.

        See :meth:`fit_features` for how it is solved.

        Args:
            texts: m items' (title, category, tags, description).
            targets: (m, d) the items' learned vectors.
            n_features: Size D of the hashed feature space (without an embedder).
            ridge: L2 penalty, > 0.
            embedder: Sentence encoder for the features, or None for hashed tokens.

        Returns:
            The fitted encoder.

        Raises:
            ValueError: Shapes disagree, there are no items, or ridge is not > 0.
        """
        _check_fit_args(len(texts), targets, ridge)
        x = content_features(texts, embedder=embedder, n_features=n_features)
        return cls.fit_features(x, targets, ridge=ridge, embedder=embedder)

    @classmethod
    def fit_features(
        cls,
        x: ContentFeatures,
        targets: npt.NDArray[np.floating],
        *,
        ridge: float = 1.0,
        embedder: TextEmbedder | None = None,
    ) -> ContentEncoder:
        """Fit ``W`` by ridge regression on features from :func:`content_features`.

        Dense (embedder) features are solved exactly in the primal,
        ``W = (X^T X + ridge I)^-1 X^T Y``. Hashed features up to ``DUAL_SOLVE_MAX_ITEMS``
        items are solved exactly in the dual, ``W = X^T (X X^T + ridge I)^-1 Y``; above it by
        LSMR, one output column at a time. All are deterministic.

        Args:
            x: (m, D) features, made with the same ``embedder`` (or hashing).
            targets: (m, d) the items' learned vectors.
            ridge: L2 penalty, > 0.
            embedder: The sentence encoder ``x`` came from, or None for hashed features.

        Returns:
            The fitted encoder.

        Raises:
            ValueError: Shapes disagree, there are no items, or ridge is not > 0.
        """
        m = x.shape[0]
        y = _check_fit_args(m, targets, ridge)
        if not sp.issparse(x):
            dense = np.asarray(x, dtype=np.float64)
            if dense.ndim != 2:
                msg = f"features must have shape (m, D), got {dense.shape}"
                raise ValueError(msg)
            gram = dense.T @ dense + ridge * np.eye(dense.shape[1])
            w = scipy.linalg.solve(gram, dense.T @ y, assume_a="pos")
            return cls(weights=w.astype(np.float32), ridge=float(ridge), embedder=embedder)
        x = sp.csr_matrix(x)
        if m <= DUAL_SOLVE_MAX_ITEMS:
            gram = (x @ x.T).toarray() + ridge * np.eye(m)
            alpha = scipy.linalg.solve(gram, y, assume_a="pos")
            w = np.asarray(x.T @ alpha)
        else:
            logger.info("fitting content encoder with LSMR on %d items", m)
            damp = math.sqrt(ridge)
            w = np.column_stack(
                [lsmr(x, y[:, j], damp=damp, atol=1e-8, btol=1e-8)[0] for j in range(y.shape[1])]
            )
        return cls(weights=w.astype(np.float32), ridge=float(ridge), embedder=embedder)

    def featurize(self, texts: Sequence[ItemText]) -> ContentFeatures:
        """This encoder's features of m items (see :func:`content_features`)."""
        return content_features(texts, embedder=self.embedder, n_features=self.n_features)

    def project(self, x: ContentFeatures) -> npt.NDArray[np.float32]:
        """Map features to vectors.

        Args:
            x: (m, n_features) features from :meth:`featurize`.

        Returns:
            (m, d) float32, rows L2-normalised (zero rows stay zero).
        """
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if sp.issparse(x):
            projected = np.asarray(x.astype(np.float32) @ self.weights, dtype=np.float64)
        else:
            dense = np.asarray(x, dtype=np.float32)
            projected = np.asarray(dense @ self.weights, dtype=np.float64)
        return _normalise_rows(projected)

    def encode_many(self, texts: Sequence[ItemText]) -> npt.NDArray[np.float32]:
        """Vectors for many items.

        Args:
            texts: m items' (title, category, tags, description).

        Returns:
            (m, d) float32, rows L2-normalised (zero rows stay zero).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.project(self.featurize(texts))

    def encode(
        self, title: str, category: str, tags: Sequence[str], description: str
    ) -> npt.NDArray[np.float32]:
        """The vector of one item from its text.

        Args:
            title: Item title.
            category: Item category ("" when unknown).
            tags: Item tags.
            description: Free-text description.

        Returns:
            (d,) float32 with unit L2 norm (zero only if nothing about the item is known to W).
        """
        vector: npt.NDArray[np.float32] = self.encode_many([(title, category, tags, description)])[
            0
        ]
        return vector


def _check_fit_args(
    m: int, targets: npt.NDArray[np.floating], ridge: float
) -> npt.NDArray[np.float64]:
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != m or m == 0:
        msg = f"targets must have shape ({m}, d) with at least one item, got {y.shape}"
        raise ValueError(msg)
    if not (math.isfinite(ridge) and ridge > 0.0):
        msg = f"ridge must be a finite number > 0, got {ridge!r}"
        raise ValueError(msg)
    return y
