"""Training the item model: item2vec-style factorisation of item co-occurrence.

1. Each user's events, in time order, form a sequence. Two events at distance ``δ <= window``
   add ``sqrt(w_a * w_b) / δ`` to the co-occurrence of their items (``w`` the event-type
   weights of :class:`streamrec.engine.serving.user_embedding.EventWeights`); the matrix is
   symmetric and
   self-pairs are skipped.
2. The co-occurrence becomes shifted positive PMI (Levy & Goldberg, 2014):
   ``max(0, log(C_ij * Z / (r_i * c_j**α)) - log(shift))`` with context smoothing α = 0.75.
3. A truncated eigendecomposition of the symmetrised matrix, positive eigenvalues only,
   ``(M + Mᵀ)/2 ≈ Q Λ Qᵀ`` (ARPACK with a start vector from the seeded generator; exact
   dense for small catalogs), gives item vectors ``Q Λ**p``, L2-normalised. On a PSD matrix
   this is the truncated SVD ``U S**p``; see :func:`factorise` for why not the SVD's ``U``.
4. The window, shift, eigenvalue power p, the user embedding's recency decay and the scoring
   function's popularity weight are chosen on a validation split: each user's last training
   event is held out (or, for session logs, the last sessions by time are held out and
   tested on their last event, see :data:`Validation`) and ranked against all items (never
   sampled negatives); the grid point with the best validation NDCG@10 wins, then the
   model is refit on all the events.
5. With a catalog, a :class:`streamrec.engine.serving.content.ContentEncoder` is fitted from the
   items' text to
   their vectors; items with no usable interactions (catalog-only, or never co-occurring) get
   their vector from their text. The text features are hashed tokens or, with
   ``TrainParams.content_features_from``, a packaged sentence encoder
   (:mod:`streamrec.engine.serving.text_encoders`).

Example:
    >>> split = leave_last_out(load_movielens_100k().events)  # doctest: +SKIP
    >>> params = TrainParams()  # doctest: +SKIP
    >>> model, report = train_item_model(split.train, None, params, seed=0)  # doctest: +SKIP
    >>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from streamrec.engine.offline.datasets import validate_catalog
from streamrec.engine.offline.evaluation import (
    EvalResult,
    PopularityRecommender,
    Split,
    evaluate_full_ranking,
    format_markdown,
    leave_last_out,
    session_split,
)
from streamrec.engine.serving.candidates import full_ranking
from streamrec.engine.serving.content import (
    DEFAULT_N_FEATURES,
    FEATURIZERS,
    HASHING_FEATURES,
    ContentEncoder,
    Featurizer,
    ItemText,
    content_features,
    has_text,
)
from streamrec.engine.serving.model import ItemModel, make_version
from streamrec.engine.serving.scoring import ScoringParams
from streamrec.engine.serving.text_encoders import load_embedder
from streamrec.engine.serving.user_embedding import EventWeights, UserEmbeddingParams

__all__ = [
    "GridPoint",
    "Hyperparameters",
    "TrainParams",
    "TrainReport",
    "cooccurrence",
    "factorise",
    "shifted_ppmi",
    "train_item_model",
    "validation_split",
]

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``, called as the long steps advance.
Progress = Callable[[str, int, int], None]

#: How training holds out its validation targets: each user's last event
#: (``"leave-last-out"``), or, for logs whose users are sessions, the last
#: :data:`VALIDATION_FRACTION` of sessions by start time, tested on their last event with
#: their earlier events as history (``"session"``, the evaluation's session protocol).
Validation = Literal["leave-last-out", "session"]
VALIDATIONS: tuple[Validation, ...] = ("leave-last-out", "session")
#: Share of sessions after the cut of a ``"session"`` validation.
VALIDATION_FRACTION = 0.2

#: Catalogs up to this many items are factorised exactly (dense ``eigh``).
DENSE_MAX_ITEMS = 256
_CONTENT_HOLDOUT_MIN_ITEMS = 20


@dataclass(frozen=True)
class TrainParams:
    """What to try on validation, and the fixed settings.

    The defaults are a small grid (120 points) that trains on MovieLens-100K in well under a
    minute on 2 CPU cores. A one-value grid trains without search.

    Attributes:
        dim: Vector dimension d.
        windows: Co-occurrence windows (in events) to try.
        shifts: PMI shifts to try (the ``k`` of SPPMI; 1 is plain PPMI).
        eig_powers: Powers p of the eigenvalues in ``Q Λ**p`` to try.
        decays: User-embedding recency decays to try.
        popularity_weights: Scoring popularity weights to try.
        context_smoothing: Exponent α of the context counts in PMI.
        max_history: Events that count for a user's vector.
        event_weights: Weight of each event type (co-occurrence and user vectors).
        content_ridge: L2 penalty of the content encoder.
        content_features: Hashed feature-space size of the content encoder.
        content_features_from: Where the content encoder's features come from: ``"hashing"``
            (hashed tokens) or a packaged sentence encoder, ``"minilm"`` (English) or ``"e5"``
            (multilingual); see :mod:`streamrec.engine.serving.text_encoders`.
        selection_metric: Validation metric that picks the grid point.
        eval_batch_size: Users scored at a time during validation.
    """

    dim: int = 64
    windows: tuple[int, ...] = (10, 50)
    shifts: tuple[float, ...] = (1.0, 0.5)
    eig_powers: tuple[float, ...] = (0.0, 0.5)
    decays: tuple[float, ...] = (0.6, 0.75, 0.9)
    popularity_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    context_smoothing: float = 0.75
    max_history: int = 50
    event_weights: EventWeights = field(default_factory=EventWeights)
    content_ridge: float = 1.0
    content_features: int = DEFAULT_N_FEATURES
    content_features_from: Featurizer = "hashing"
    selection_metric: str = "ndcg@10"
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        grids: dict[str, tuple[float, ...]] = {
            "windows": tuple(float(w) for w in self.windows),
            "shifts": self.shifts,
            "eig_powers": self.eig_powers,
            "decays": self.decays,
            "popularity_weights": self.popularity_weights,
        }
        for name, values in grids.items():
            if not values:
                msg = f"TrainParams.{name} must list at least one value, got ()"
                raise ValueError(msg)
        checks = [
            ("dim", self.dim >= 1, self.dim),
            ("windows", all(int(w) == w and w >= 1 for w in self.windows), self.windows),
            ("shifts", all(s > 0 for s in self.shifts), self.shifts),
            ("decays", all(0 < d <= 1 for d in self.decays), self.decays),
            (
                "popularity_weights",
                all(p >= 0 for p in self.popularity_weights),
                self.popularity_weights,
            ),
            ("context_smoothing", 0 < self.context_smoothing <= 1, self.context_smoothing),
            ("content_ridge", self.content_ridge > 0, self.content_ridge),
            ("content_features", self.content_features >= 1, self.content_features),
            (
                "content_features_from",
                self.content_features_from in FEATURIZERS,
                self.content_features_from,
            ),
            ("eval_batch_size", self.eval_batch_size >= 1, self.eval_batch_size),
        ]
        for name, ok, value in checks:
            if not ok:
                msg = f"TrainParams.{name} is out of range, got {value!r}"
                raise ValueError(msg)

    def grid(self) -> list[Hyperparameters]:
        """Every grid point, in search order."""
        return [
            Hyperparameters(w, s, p, d, pw, self.dim)
            for w, s, p, d, pw in itertools.product(
                self.windows, self.shifts, self.eig_powers, self.decays, self.popularity_weights
            )
        ]


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the grid."""

    window: int
    shift: float
    eig_power: float
    decay: float
    popularity_weight: float
    dim: int

    def as_dict(self) -> dict[str, float]:
        """The values by name."""
        return {
            "window": float(self.window),
            "shift": self.shift,
            "eig_power": self.eig_power,
            "decay": self.decay,
            "popularity_weight": self.popularity_weight,
            "dim": float(self.dim),
        }


@dataclass(frozen=True)
class GridPoint:
    """A grid point and its validation score (the selection metric)."""

    hyperparameters: Hyperparameters
    score: float


@dataclass(frozen=True)
class TrainReport:
    """What training chose and measured.

    Attributes:
        chosen: The hyperparameters of the returned model.
        validation: The model's validation metrics at ``chosen`` (None when no user had
            enough events to hold one out).
        validation_popularity: The popularity baseline on the same validation split.
        grid: Every grid point tried with its validation score.
        timings: Seconds per stage.
        n_events: Training events.
        n_users: Users in the training events.
        n_items: Items in the model.
        effective_rank: Positive eigenvalues kept (<= dim; the rest is zero padding).
        n_content_items: Items whose vector came from the content encoder.
        content_holdout_cosine: Mean cosine between held-out items' learned vectors and their
            content-encoded vectors (None without a catalog).
        content_holdout_baseline: The same for the mean training vector, a floor to beat.
        validation_model: The chosen point fitted on the validation training part (the
            validation targets held out), without content; None without validation.
        validation_protocol: How the validation targets were held out (:data:`Validation`).
        validation_split: The split tuned on (its test part: the validation targets).
    """

    chosen: Hyperparameters
    validation: EvalResult | None
    validation_popularity: EvalResult | None
    grid: tuple[GridPoint, ...]
    timings: Mapping[str, float]
    n_events: int
    n_users: int
    n_items: int
    effective_rank: int
    n_content_items: int = 0
    content_holdout_cosine: float | None = None
    content_holdout_baseline: float | None = None
    validation_model: ItemModel | None = field(default=None, repr=False, compare=False)
    validation_protocol: Validation = "leave-last-out"
    validation_split: Split | None = field(default=None, repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for ``model.json``: ``validation.<m>``, ``validation_popularity.<m>``."""
        out: dict[str, float] = {}
        for prefix, result in (
            ("validation", self.validation),
            ("validation_popularity", self.validation_popularity),
        ):
            if result is not None:
                out.update({f"{prefix}.{k}": v for k, v in result.as_dict().items()})
        if self.content_holdout_cosine is not None:
            out["content.holdout_cosine"] = self.content_holdout_cosine
        if self.content_holdout_baseline is not None:
            out["content.holdout_baseline_cosine"] = self.content_holdout_baseline
        out["train_seconds"] = float(sum(self.timings.values()))
        return out

    def to_markdown(self) -> str:
        """A short Markdown report: validation table, chosen hyperparameters, timings."""
        held_out = (
            "the last sessions by time, each on its last event"
            if self.validation_protocol == "session"
            else "each user's last event"
        )
        lines = [
            "## Validation (full ranking, seen items excluded)",
            "",
            f"Held out: {held_out}.",
            "",
        ]
        results = {
            name: r
            for name, r in (
                ("item2vec", self.validation),
                ("popularity", self.validation_popularity),
            )
            if r is not None
        }
        lines.append(format_markdown(results) if results else "No validation users.\n")
        chosen = ", ".join(f"{k}={v:g}" for k, v in self.chosen.as_dict().items())
        lines += [f"Chosen: {chosen}; effective rank {self.effective_rank}.", ""]
        if self.content_holdout_cosine is not None:
            lines += [
                f"Content encoder held-out cosine {self.content_holdout_cosine:.3f} "
                f"(mean-vector baseline {self.content_holdout_baseline or 0.0:.3f}); "
                f"{self.n_content_items} items got content vectors.",
                "",
            ]
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        lines.append(f"Timings: {timing}.")
        return "\n".join(lines) + "\n"


def cooccurrence(
    item_codes: npt.NDArray[np.integer],
    user_codes: npt.NDArray[np.integer],
    weights: npt.NDArray[np.floating],
    window: int,
    n_items: int,
) -> sp.csr_matrix:
    """Distance-weighted, symmetric item co-occurrence within each user's sequence.

    Args:
        item_codes: (m,) item rows of the events, in time order.
        user_codes: (m,) user codes of the events.
        weights: (m,) event-type weights.
        window: Largest distance (in events) that counts.
        n_items: Number of items n.

    Returns:
        (n, n) float64 CSR, ``C[a, b] = sum over pairs of sqrt(w_a * w_b) / distance``.
    """
    order = np.argsort(user_codes, kind="stable")
    items = np.asarray(item_codes)[order]
    users = np.asarray(user_codes)[order]
    w = np.asarray(weights, dtype=np.float64)[order]
    total = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for dist in range(1, window + 1):
        if dist >= len(items):
            break
        same = users[dist:] == users[:-dist]
        if not same.any():
            break
        a = items[:-dist][same]
        b = items[dist:][same]
        v = np.sqrt(w[:-dist][same] * w[dist:][same]) / dist
        keep = a != b
        a, b, v = a[keep], b[keep], v[keep]
        block = sp.coo_matrix(
            (np.concatenate([v, v]), (np.concatenate([a, b]), np.concatenate([b, a]))),
            shape=(n_items, n_items),
        )
        total = total + block.tocsr()
    result: sp.csr_matrix = sp.csr_matrix(total)
    return result


def shifted_ppmi(counts: sp.spmatrix, shift: float, smoothing: float = 0.75) -> sp.csr_matrix:
    """Shifted positive PMI with context-distribution smoothing.

    Args:
        counts: (n, n) non-negative co-occurrence.
        shift: k; ``log(k)`` is subtracted from PMI before clipping at 0.
        smoothing: Exponent α applied to the context (column) counts.

    Returns:
        (n, n) CSR with ``max(0, log(C_ij * Z / (r_i * c_j**α)) - log k)``, where ``r`` are
        the row sums, ``c`` the column sums and ``Z = sum(c**α)``.
    """
    coo = sp.coo_matrix(counts)
    coo.sum_duplicates()
    nz = coo.data > 0
    rows, cols, data = coo.row[nz], coo.col[nz], coo.data[nz]
    row_sums = np.asarray(coo.sum(axis=1)).ravel()
    ctx = np.asarray(coo.sum(axis=0)).ravel() ** smoothing
    z = float(ctx.sum())
    if not data.size:
        return sp.csr_matrix(coo.shape, dtype=np.float64)
    pmi = np.log(data) + math.log(z) - np.log(row_sums[rows]) - np.log(ctx[cols]) - math.log(shift)
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (rows[keep], cols[keep])), shape=coo.shape)


def factorise(
    matrix: sp.spmatrix, dim: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Truncated eigendecomposition of the symmetrised matrix, positive part only.

    ``(M + Mᵀ) / 2 ≈ Q Λ Qᵀ`` keeping the ``dim`` largest eigenvalues that are > 0. For a
    PSD matrix this is the truncated SVD; unlike the SVD's left vectors alone, it keeps
    items that co-occur *directly* close (for "B always follows A", A and B share no
    context, and ``U`` of an SVD would make them orthogonal, while ``Q`` makes them
    parallel). It equals the ``W + C`` embedding of Levy & Goldberg.

    Uses ARPACK (``scipy.sparse.linalg.eigsh``) with a start vector drawn from ``rng``, or an
    exact dense ``eigh`` when the matrix has at most ``DENSE_MAX_ITEMS`` rows or ``dim``
    is not below its size. Deterministic for a given ``rng`` state.

    Args:
        matrix: (n, n) matrix to factorise.
        dim: Components wanted.
        rng: Source of the ARPACK start vector.

    Returns:
        ``(Q (n, r), λ (r,))`` with r <= dim, eigenvalues descending and > 0.
    """
    n = int(matrix.shape[0])
    if matrix.shape[0] != matrix.shape[1]:
        msg = f"matrix must be square, got shape {matrix.shape}"
        raise ValueError(msg)
    sym = sp.csr_matrix((matrix + matrix.T) * 0.5, dtype=np.float64)
    if n == 0 or sym.nnz == 0:
        return np.zeros((n, 0)), np.zeros(0)
    v0 = rng.standard_normal(n)
    if n <= DENSE_MAX_ITEMS or dim >= n - 1:
        lam, q = np.linalg.eigh(sym.toarray())
    else:
        lam, q = eigsh(sym, k=dim, which="LA", v0=v0)
    order = np.argsort(-lam, kind="stable")[:dim]
    lam, q = lam[order], q[:, order]
    keep = lam > (lam[0] * 1e-8 if lam.size and lam[0] > 0 else np.inf)
    return np.ascontiguousarray(q[:, keep]), lam[keep]


def _item_vectors(
    u: npt.NDArray[np.float64], s: npt.NDArray[np.float64], power: float, dim: int
) -> npt.NDArray[np.float32]:
    out = np.zeros((u.shape[0], dim), dtype=np.float64)
    out[:, : u.shape[1]] = u * s[None, :] ** power
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


@dataclass(frozen=True)
class _Codes:
    item_ids: list[str]
    items: npt.NDArray[np.intp]
    users: npt.NDArray[np.intp]
    weights: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float32]


def _codes(events: pd.DataFrame, item_ids: list[str], event_weights: EventWeights) -> _Codes:
    ordered = events.sort_values("ts", kind="stable")
    index = {item: i for i, item in enumerate(item_ids)}
    items: npt.NDArray[np.intp] = np.asarray(
        ordered["item_id"].astype(str).map(index).to_numpy(), dtype=np.intp
    )
    users: npt.NDArray[np.intp] = np.asarray(
        pd.factorize(ordered["user_id"].astype(str))[0], dtype=np.intp
    )
    table = event_weights.as_dict()
    bad = ~ordered["type"].isin(table)
    if bad.any():
        msg = (
            f"events column 'type' must be one of {', '.join(table)}, "
            f"got {ordered['type'][bad].iloc[0]!r}"
        )
        raise ValueError(msg)
    weights: npt.NDArray[np.float64] = np.asarray(
        ordered["type"].map(table).to_numpy(), dtype=np.float64
    )
    counts = np.bincount(items, minlength=len(item_ids)).astype(np.float32)
    return _Codes(item_ids, items, users, weights, counts)


def _candidate(
    codes: _Codes, vectors: npt.NDArray[np.float32], hyper: Hyperparameters, params: TrainParams
) -> ItemModel:
    return ItemModel(
        version="candidate",
        item_ids=tuple(codes.item_ids),
        vectors=vectors,
        popularity=codes.counts,
        user_params=UserEmbeddingParams(params.max_history, hyper.decay, params.event_weights),
        scoring=ScoringParams(hyper.popularity_weight),
        content=None,
        item_categories=("",) * len(codes.item_ids),
        created_at=datetime.fromtimestamp(0, tz=UTC),
    )


def validation_split(
    events: pd.DataFrame, validation: Validation, fraction: float = VALIDATION_FRACTION
) -> Split:
    """The split training tunes on: ``events`` divided as ``validation`` says.

    Args:
        events: Training events.
        validation: One of :data:`VALIDATIONS`.
        fraction: With ``"session"``, the share of sessions after the cut.

    Returns:
        A split of ``events``; its test part holds the validation targets.

    Raises:
        ValueError: An unknown ``validation``.
    """
    if validation == "leave-last-out":
        return leave_last_out(events)
    if validation == "session":
        return session_split(events, fraction)
    msg = f"validation must be one of {', '.join(VALIDATIONS)}, got {validation!r}"
    raise ValueError(msg)


def _tune(
    split: Split,
    params: TrainParams,
    seed: int,
    progress: Progress | None,
) -> tuple[
    Hyperparameters,
    EvalResult | None,
    EvalResult | None,
    tuple[GridPoint, ...],
    ItemModel | None,
]:
    grid = params.grid()
    if split.test.empty:
        logger.warning(
            "no validation targets (no held-out user or session with 2+ events): skipping "
            "validation, using the first grid point"
        )
        return grid[0], None, None, (), None
    universe = split.item_ids()
    train_items = sorted(split.train["item_id"].astype(str).unique())
    codes = _codes(split.train, train_items, params.event_weights)
    popularity = PopularityRecommender.fit(split.train, universe)
    pop_result = evaluate_full_ranking(
        popularity, split, universe, batch_size=params.eval_batch_size
    )
    points: list[GridPoint] = []
    best: tuple[float, Hyperparameters, EvalResult, ItemModel] | None = None
    done = 0
    for window in params.windows:
        counts = cooccurrence(codes.items, codes.users, codes.weights, window, len(train_items))
        for shift in params.shifts:
            m = shifted_ppmi(counts, shift, params.context_smoothing)
            u, s = factorise(m, params.dim, np.random.default_rng(seed))
            for power in params.eig_powers:
                vectors = _item_vectors(u, s, power, params.dim)
                for decay, pop_weight in itertools.product(
                    params.decays, params.popularity_weights
                ):
                    hyper = Hyperparameters(window, shift, power, decay, pop_weight, params.dim)
                    model = _candidate(codes, vectors, hyper, params)
                    result = evaluate_full_ranking(
                        full_ranking(model, universe),
                        split,
                        universe,
                        batch_size=params.eval_batch_size,
                    )
                    score = result[params.selection_metric].mean
                    points.append(GridPoint(hyper, score))
                    if best is None or score > best[0]:
                        best = (score, hyper, result, model)
                    done += 1
                    if progress is not None:
                        progress("validate", done, len(grid))
    if best is None:  # pragma: no cover - TrainParams forbids an empty grid
        msg = "the hyperparameter grid is empty"
        raise RuntimeError(msg)
    logger.info("chose %s with validation %s %.4f", best[1], params.selection_metric, best[0])
    return best[1], best[2], pop_result, tuple(points), best[3]


def _catalog_prices(
    catalog: pd.DataFrame | None, item_ids: Sequence[str]
) -> npt.NDArray[np.float32] | None:
    """(n,) catalog prices in row order (NaN when unknown); None without any price."""
    if catalog is None or "price" not in catalog.columns:
        return None
    known = dict(zip(catalog["item_id"].astype(str), catalog["price"].astype(float), strict=True))
    prices = np.asarray([known.get(i, math.nan) for i in item_ids], dtype=np.float32)
    return prices if np.isfinite(prices).any() else None


def _catalog_texts(catalog: pd.DataFrame) -> dict[str, tuple[ItemText, str]]:
    out: dict[str, tuple[ItemText, str]] = {}
    columns = (catalog[c].tolist() for c in ("item_id", "title", "category", "tags", "description"))
    for item_id, title, category, tags, description in zip(*columns, strict=True):
        text: ItemText = (str(title), str(category), [str(t) for t in tags], str(description))
        out[str(item_id)] = (text, str(category))
    return out


def _fit_content(
    texts: Sequence[ItemText],
    targets: npt.NDArray[np.float32],
    params: TrainParams,
    rng: np.random.Generator,
) -> tuple[ContentEncoder, float | None, float | None]:
    holdout_cos: float | None = None
    baseline_cos: float | None = None
    embedder = (
        None
        if params.content_features_from == HASHING_FEATURES
        else load_embedder(params.content_features_from)
    )
    # Features are computed once; the hold-out fit and the final fit take rows of them.
    x = content_features(texts, embedder=embedder, n_features=params.content_features)
    m = len(texts)
    if m >= _CONTENT_HOLDOUT_MIN_ITEMS:
        perm = rng.permutation(m)
        cut = max(1, m // 10)
        held, fit_rows = perm[:cut], perm[cut:]
        enc = ContentEncoder.fit_features(
            x[fit_rows], targets[fit_rows], ridge=params.content_ridge, embedder=embedder
        )
        predicted = enc.project(x[held])
        holdout_cos = float(np.mean(np.sum(predicted * targets[held], axis=1)))
        mean = targets[fit_rows].mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        baseline_cos = float(np.mean(targets[held] @ mean))
    encoder = ContentEncoder.fit_features(x, targets, ridge=params.content_ridge, embedder=embedder)
    return encoder, holdout_cos, baseline_cos


def train_item_model(
    events: pd.DataFrame,
    catalog: pd.DataFrame | None,
    params: TrainParams,
    seed: int,
    progress: Progress | None = None,
    *,
    now: datetime | None = None,
    clock: Callable[[], float] = time.perf_counter,
    validation: Validation = "leave-last-out",
    validation_fraction: float = VALIDATION_FRACTION,
) -> tuple[ItemModel, TrainReport]:
    """Learn item vectors from interaction sequences, tuned on a validation split.

    Tuning holds out validation targets from ``events`` as ``validation`` says (each
    user's last event by default; pass only training events when you evaluate on a test
    split), picks the grid point with the best validation ``params.selection_metric``,
    then refits on all of ``events``.

    Args:
        events: Training events (event schema; see :mod:`streamrec.engine.offline.datasets`).
        catalog: Item catalog for the content encoder and categories, or None.
        params: Grid and fixed settings.
        seed: Seeds the eigensolver start vector and the content hold-out; equal seeds and inputs
            give identical models.
        progress: Called as ``progress(stage, done, total)`` during the long steps.
        now: Creation time (timezone-aware) for the model version; default the time of the
            last event, which keeps training reproducible.
        clock: Monotonic seconds, for the timings.
        validation: How the validation targets are held out (:data:`Validation`).
        validation_fraction: With ``"session"`` validation, the share of sessions held out.

    Returns:
        The model and the training report.

    Raises:
        ValueError: No events, an unknown event type or ``validation``, or a naive ``now``.
        streamrec.engine.offline.datasets.DatasetError: The catalog is not in the catalog schema.
    """
    if events.empty:
        msg = "events must not be empty"
        raise ValueError(msg)
    created = (
        datetime.fromtimestamp(int(events["ts"].max()) / 1000.0, tz=UTC)
        if now is None
        else now.astimezone(UTC)
        if now.tzinfo is not None
        else None
    )
    if created is None:
        msg = "now must be a timezone-aware datetime, got a naive one"
        raise ValueError(msg)
    timings: dict[str, float] = {}
    t0 = clock()
    split = validation_split(events, validation, validation_fraction)
    chosen, val_result, validation_pop, grid, validation_model = _tune(
        split, params, seed, progress
    )
    timings["validate"] = clock() - t0

    t0 = clock()
    train_items = set(events["item_id"].astype(str))
    checked = validate_catalog(catalog) if catalog is not None else None
    texts = _catalog_texts(checked) if checked is not None else {}
    item_ids = sorted(train_items | set(texts))
    codes = _codes(events, item_ids, params.event_weights)
    total_steps = 3 if texts else 2
    counts = cooccurrence(codes.items, codes.users, codes.weights, chosen.window, len(item_ids))
    if progress is not None:
        progress("fit", 1, total_steps)
    m = shifted_ppmi(counts, chosen.shift, params.context_smoothing)
    u, s = factorise(m, params.dim, np.random.default_rng(seed))
    vectors = _item_vectors(u, s, chosen.eig_power, params.dim)
    if progress is not None:
        progress("fit", 2, total_steps)
    timings["fit"] = clock() - t0

    t0 = clock()
    content: ContentEncoder | None = None
    holdout_cos: float | None = None
    baseline_cos: float | None = None
    n_content = 0
    learned = np.linalg.norm(vectors, axis=1) > 0
    # Items whose "text" is only their id get no content vector (it would be noise) and
    # keep a zero vector until they have interactions.
    with_text = np.fromiter(
        (i in texts and has_text(i, *texts[i][0]) for i in item_ids),
        dtype=bool,
        count=len(item_ids),
    )
    fit_rows = np.flatnonzero(learned & with_text)
    if fit_rows.size:
        content, holdout_cos, baseline_cos = _fit_content(
            [texts[item_ids[r]][0] for r in fit_rows],
            vectors[fit_rows],
            params,
            np.random.default_rng([seed, 1]),
        )
        cold = np.flatnonzero(~learned & with_text)
        if cold.size:
            vectors[cold] = content.encode_many([texts[item_ids[r]][0] for r in cold])
            n_content = int(cold.size)
        if progress is not None:
            progress("fit", 3, total_steps)
    timings["content"] = clock() - t0

    user_params = UserEmbeddingParams(params.max_history, chosen.decay, params.event_weights)
    scoring = ScoringParams(chosen.popularity_weight)
    report = TrainReport(
        chosen=chosen,
        validation=val_result,
        validation_popularity=validation_pop,
        grid=grid,
        timings=timings,
        n_events=len(events),
        n_users=int(events["user_id"].nunique()),
        n_items=len(item_ids),
        effective_rank=int(s.size),
        n_content_items=n_content,
        content_holdout_cosine=holdout_cos,
        content_holdout_baseline=baseline_cos,
        validation_model=validation_model,
        validation_protocol=validation,
        validation_split=split,
    )
    hyper = chosen.as_dict() | {
        "context_smoothing": params.context_smoothing,
        "effective_rank": float(s.size),
        "seed": float(seed),
    }
    prices = _catalog_prices(checked, item_ids)
    model = ItemModel(
        version=make_version(
            created,
            item_ids,
            vectors,
            codes.counts,
            user_params,
            scoring,
            content,
            prices=prices,
        ),  # fmt: skip
        item_ids=tuple(item_ids),
        vectors=vectors,
        popularity=codes.counts,
        user_params=user_params,
        scoring=scoring,
        content=content,
        item_categories=tuple(texts[i][1] if i in texts else "" for i in item_ids),
        created_at=created,
        metrics=report.metrics(),
        hyperparameters=hyper,
        item_prices=prices,
    )
    return model, report
