"""What serving and offline evaluation share: the history window, query vectors, and the
second-stage ranker's candidates and their user context.

The worker (:class:`~streamrec.engine.serving.recommender.Recommender`: item ids, items
indexed from their text, the catalog's metadata) and offline evaluation
(:meth:`~streamrec.engine.serving.model.ItemModel.recommender`: model rows) call these same
functions, so a change to how a history is weighted, a user embedded or candidates
gathered shows up in both, and in the offline numbers.

Keys are whatever the caller ranks: item ids online, model rows offline. Functions that
touch keys are generic over them (``K``).

Example:
    >>> from streamrec.engine.serving.ranker import CoTable, RankerSettings
    >>> table = CoTable.build([([0, 1], ["view", "view"]), ([0, 2], ["view", "view"])], 3)
    >>> seen = {0}
    >>> keys, flags = gather_candidates(
    ...     ann=[2, 0, 1], partners=table.partners_of([0], 50, seen), trending=[1],
    ...     fresh=(), key_of_row=int, excluded=seen.__contains__,
    ...     settings=RankerSettings(candidates=2),
    ... )
    >>> keys
    [2, 1]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.adaptation import adaptations
from streamrec.engine.serving.ranker import (
    SOURCES,
    CandidateContext,
    CoTable,
    RankerSettings,
    merge_sources,
    rerank_scores,
)
from streamrec.engine.serving.scoring import score_items_batch
from streamrec.engine.serving.user_embedding import (
    UserEmbeddingParams,
    history_weights,
    user_embedding,
)

if TYPE_CHECKING:
    from streamrec.engine.serving.model import ItemModel

K = TypeVar("K")

__all__ = [
    "embed_histories",
    "full_ranking",
    "ranker_inputs",
    "reranked_scores",
    "gather_candidates",
    "history_context",
    "history_window",
    "score_order",
]


def history_window(
    types: Sequence[str], params: UserEmbeddingParams
) -> tuple[int, npt.NDArray[np.float64]]:
    """Where the events that count for the user vector start, and their weights.

    Only the last ``params.max_history`` events count. Their weights are computed over all
    of them (ages count every event) before the caller drops events on items that have no
    vector, so a dropped item does not make the others look younger.

    Args:
        types: (h,) the history's event types, oldest first.
        params: The model's user-vector parameters.

    Returns:
        ``(start, weights (h - start,))``.
    """
    start = max(0, len(types) - params.max_history)
    return start, history_weights(types[start:], params)


def embed_histories(
    model: ItemModel,
    vectors: Sequence[npt.NDArray[np.floating]],
    weights: Sequence[npt.NDArray[np.float64]],
    sequences: Sequence[tuple[Sequence[int], Sequence[str]]],
) -> npt.NDArray[np.float32]:
    """(u, query_dim) query vectors: the linear part (weighted mean of the history's item
    vectors plus the online adaptation) and, with an encoder, its part in one batch.

    Args:
        model: The model whose adaptation and encoder apply.
        vectors: Per user, (h, dim) the history's item vectors (from
            :func:`history_window`'s events that have one); h may be 0.
        weights: Per user, (h,) their weights.
        sequences: Per user, the encoder's input (``ItemModel.sequence_rows``).

    Returns:
        (u, model.query_dim) float32; a user without history gets zeros in the linear part.
    """
    dim = model.dim
    users = np.zeros((len(vectors), model.query_dim), dtype=np.float32)
    for u, (hist, w) in enumerate(zip(vectors, weights, strict=True)):
        users[u, :dim] = user_embedding(hist, w)
    if model.adaptation.enabled:
        users[:, :dim] += adaptations(list(vectors), list(weights), model.adaptation, dim)
    if model.encoder is not None:
        users[:, dim:] = model.encoder.encode([r for r, _ in sequences], [k for _, k in sequences])
    return users


def gather_candidates(
    ann: Iterable[K],
    partners: Sequence[int],
    trending: Iterable[K],
    fresh: Iterable[K],
    key_of_row: Callable[[int], K],
    excluded: Callable[[K], bool],
    settings: RankerSettings,
    use: Collection[str] = SOURCES,
) -> tuple[list[K], npt.NDArray[np.bool_]]:
    """The ranker's candidates from every source, first proposal first.

    - ann: the first ``settings.candidates`` of ``ann`` (best score first) not excluded;
    - cooccurrence: ``partners``, the rows most often viewed together with the user's last
      items (:meth:`CoTable.partners_of`, or :meth:`CoTable.partners_batch` for a whole
      batch; the caller excludes there);
    - trending: the first ``settings.trending_candidates`` of ``trending`` not excluded;
    - fresh: the first ``settings.fresh_candidates`` of ``fresh`` not excluded.

    Sources not in ``use`` propose nothing. ``excluded(key)`` says what must not be
    proposed; every source stops at the number it needs, so long inputs (a catalog's fresh
    items) cost nothing.

    Returns:
        ``(keys, flags)`` as :func:`~streamrec.engine.serving.ranker.merge_sources`.
    """

    def first(keys: Iterable[K], n: int) -> list[K]:
        return list(itertools.islice((k for k in keys if not excluded(k)), n))

    found = (
        first(ann, settings.candidates),
        [key_of_row(r) for r in partners],
        first(trending, settings.trending_candidates),
        first(fresh, settings.fresh_candidates),
    )
    ann_, co, trend, new = (
        keys if source in use else [] for source, keys in zip(SOURCES, found, strict=True)
    )
    return merge_sources(ann_, co, trend, new)


def history_context(
    keys: Sequence[K],
    row_of: Callable[[K], int],
    category_of: Callable[[K], str],
    price_of: Callable[[K], float],
    settings: RankerSettings,
) -> CandidateContext:
    """The features' view of a history (oldest first): the last ``settings.session`` or
    ``settings.category_window`` items, whichever is more, which is all the features read.

    Args:
        keys: The history's keys, oldest first.
        row_of: A key's model row, -1 for none.
        category_of: A key's category ("" for none).
        price_of: A key's price (NaN when unknown).
        settings: The ranker's settings.
    """
    recent = keys[-max(settings.session, settings.category_window) :]
    return CandidateContext(
        [row_of(k) for k in recent], [category_of(k) for k in recent], [price_of(k) for k in recent]
    )


def score_order(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
    """Candidates' order for the features: best score first, ties in proposal order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


# -- offline: the same candidates over full score vectors ---------------------------


def full_ranking(
    model: ItemModel, item_ids: Sequence[str], trending: Sequence[str] = ()
) -> Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], npt.NDArray[np.float32]]:
    """A batch scorer over the columns ``item_ids``, for offline evaluation.

    Uses :meth:`ItemModel.embed_users`, the scoring function and, with a ranker,
    :func:`reranked_scores`, exactly as served online. Items the model does not know score
    -inf.

    Args:
        model: The trained model.
        item_ids: The evaluation's item universe, in column order.
        trending: Trending item ids, best first, for the ranker's trending source (as
            the online item statistics would give them at the evaluation's time).

    Returns:
        ``recommend(histories, types) -> (u, len(item_ids))`` float32 scores.
    """
    cols = model.rows(item_ids)
    known = cols >= 0
    width = len(item_ids)
    trend_rows = [model.index[i] for i in trending if i in model.index]

    def recommend(
        histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        users = model.embed_users(histories, types)
        full = score_items_batch(users, model.index_vectors, model.log_popularity, model.scoring)
        if model.ranker is not None:
            for u, history in enumerate(histories):
                full[u] = reranked_scores(model, full[u], history, trend_rows)
        out = np.full((len(histories), width), -np.inf, dtype=np.float32)
        out[:, known] = full[:, cols[known]]
        return out

    return recommend


def ranker_inputs(
    model: ItemModel,
    scores: npt.NDArray[np.floating],
    history: Sequence[str],
    table: CoTable,
    settings: RankerSettings,
    trending: Sequence[int] = (),
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """One user's candidates and their features, as the worker gathers them online:
    the ``settings.candidates`` best items by ``scores`` (n,) that are not in
    ``history`` (the ANN search), their co-occurrence partners and the first
    ``trending`` rows (ranked trending items), merged and ordered by score.

    Returns:
        ``(candidate rows, best score first; their (c, len(FEATURES)) features)``.
    """
    masked = scores.astype(np.float64, copy=True)
    seen = {model.index[i] for i in history if i in model.index}
    masked[list(seen)] = -np.inf
    excluded = seen | {int(r) for r in np.flatnonzero(~np.isfinite(masked))}
    user = history_context(
        [model.index.get(i, -1) for i in history],
        int,
        lambda r: model.item_categories[r] if r >= 0 else "",
        model.item_price,
        settings,
    )
    keys, flags = gather_candidates(
        ann=np.argsort(-masked, kind="stable").tolist(),
        partners=table.partners_of(
            list(user.rows)[-settings.session :], settings.co_candidates, excluded
        ),
        trending=trending,
        fresh=(),
        key_of_row=int,
        excluded=excluded.__contains__,
        settings=settings,
    )
    cands = np.asarray(keys, dtype=np.intp)
    order = score_order(masked[cands])
    cands, flags = cands[order], flags[order]
    prices = np.asarray([model.item_price(int(r)) for r in cands], dtype=np.float64)
    categories = [model.item_categories[r] for r in cands]
    features = model.ranker_features(
        masked[cands], cands, flags, categories, prices, user, table, settings
    )
    return cands, features


def reranked_scores(
    model: ItemModel,
    scores: npt.NDArray[np.float32],
    history: Sequence[str],
    trending: Sequence[int] = (),
) -> npt.NDArray[np.float32]:
    """One user's (n,) scores with the ranker's order on top: the candidates the
    worker gathers (:func:`ranker_inputs`) are re-ordered by the ranker and placed
    above every other item, which keeps the model's order."""
    if model.ranker is None or model.cotable is None:
        return scores
    cands, features = ranker_inputs(
        model, scores, history, model.cotable, model.ranker.settings, trending
    )
    if not len(cands):
        return scores
    learned = rerank_scores(model.ranker, features)
    out = scores.astype(np.float64, copy=True)
    top = float(np.max(out[np.isfinite(out)])) if np.isfinite(out).any() else 0.0
    out[cands] = top + 1.0 + (learned - learned.min())
    return out.astype(np.float32)
