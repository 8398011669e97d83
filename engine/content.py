"""Content encoder: item vectors for items nobody has interacted with yet (cold start).

An item's text (title, category, tags, description) becomes tokens: lowercased word unigrams
of the title and description, ``cat:<category>``, ``tag:<tag>`` and a constant bias token.
Tokens are hashed with a stable signed hash (BLAKE2b, never Python's salted ``hash``) into
``n_features`` (2**14) sparse features, each row L2-normalised. A linear map ``W`` of shape
(n_features, d) is fitted by ridge regression from the training items' features to their
learned vectors, so a new item lands near the items whose text resembles it.

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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import lsmr

__all__ = [
    "DEFAULT_N_FEATURES",
    "HASHING",
    "ContentEncoder",
    "ItemText",
    "content_tokens",
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


def _normalise_rows(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
    result: npt.NDArray[np.float32] = out.astype(np.float32)
    return result


@dataclass(frozen=True, eq=False)
class ContentEncoder:
    """Maps item text to the learned item-vector space.

    Attributes:
        weights: (n_features, d) float32 linear map from hashed features to vectors.
        ridge: The L2 penalty it was fitted with.
    """

    weights: npt.NDArray[np.float32]
    ridge: float = 1.0

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.dtype != np.float32:
            msg = (
                "ContentEncoder.weights must be a float32 array of shape (n_features, d), "
                f"got {self.weights.dtype} {self.weights.shape}"
            )
            raise ValueError(msg)

    @property
    def n_features(self) -> int:
        """Size D of the hashed feature space."""
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
    ) -> ContentEncoder:
        """Fit ``W`` by ridge regression: ``min ||X W - Y||^2 + ridge * ||W||^2``.

        Up to ``DUAL_SOLVE_MAX_ITEMS`` items this is solved exactly in the dual,
        ``W = X^T (X X^T + ridge I)^-1 Y``; above it by LSMR on the sparse features, one
        output column at a time. Both are deterministic.

        Args:
            texts: m items' (title, category, tags, description).
            targets: (m, d) the items' learned vectors.
            n_features: Size D of the hashed feature space.
            ridge: L2 penalty, > 0.

        Returns:
            The fitted encoder.

        Raises:
            ValueError: Shapes disagree, there are no items, or ridge is not > 0.
        """
        y = np.asarray(targets, dtype=np.float64)
        if y.ndim != 2 or y.shape[0] != len(texts) or not texts:
            msg = f"targets must have shape ({len(texts)}, d) with at least one item, got {y.shape}"
            raise ValueError(msg)
        if not (math.isfinite(ridge) and ridge > 0.0):
            msg = f"ridge must be a finite number > 0, got {ridge!r}"
            raise ValueError(msg)
        x = hash_features([content_tokens(*t) for t in texts], n_features)
        m = x.shape[0]
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
        return cls(weights=w.astype(np.float32), ridge=float(ridge))

    def encode_many(self, texts: Sequence[ItemText]) -> npt.NDArray[np.float32]:
        """Vectors for many items.

        Args:
            texts: m items' (title, category, tags, description).

        Returns:
            (m, d) float32, rows L2-normalised (zero rows stay zero).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = hash_features([content_tokens(*t) for t in texts], self.n_features)
        projected = np.asarray(x.astype(np.float32) @ self.weights, dtype=np.float64)
        return _normalise_rows(projected)

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
