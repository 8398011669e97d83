"""The recommender: user state in, ranked items with reasons out. Pure, no I/O.

Per user: the user vector is computed from the vectors of their recent items
(:mod:`streamrec.engine.serving.user_embedding`, the same code as offline evaluation). The index
holds item
vectors augmented with the popularity prior
(:func:`streamrec.engine.serving.scoring.augment_items`), so
its inner product *is* the final score and candidates arrive in final order. Candidates
are filtered (purchased, unavailable, already seen), de-duplicated and explained
(:mod:`streamrec.engine.reasons`). Users without usable history, and short lists, are filled with
the most popular available items, those in the categories of the user's events first,
labelled as such. Online item statistics
(:class:`streamrec.engine.serving.item_stats.ItemStats`: trending items, bought/viewed-together
counts),
when the caller passes them, back the ``trending`` and ``*_together`` reasons.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamrec.engine.ports import CandidateIndex, FloatArray, Hits
from streamrec.engine.reasons import (
    CitableHistory,
    Language,
    Reason,
    ReasonParams,
    SessionPartners,
    TemplateGenerator,
    build_reason,
    category_counts,
    tag_counts,
    trend_evidence,
)
from streamrec.engine.serving.candidates import (
    embed_histories,
    gather_candidates,
    history_window,
    score_order,
)
from streamrec.engine.serving.catalog import (
    Catalog,
    CatalogChange,
    product_words,
    same_words,
    title_key,
)
from streamrec.engine.serving.content import has_text
from streamrec.engine.serving.diversity import mmr_order
from streamrec.engine.serving.features import CandidateBlock, CategoryCodes, batch_features
from streamrec.engine.serving.item_stats import ItemStats
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.ranker import FEATURES, SOURCES, tie_broken
from streamrec.engine.serving.scoring import (
    augment_items,
    augment_user,
    normalised_log_popularity,
    score_items,
)
from streamrec.engine.serving.user_embedding import explanation_rows
from streamrec.engine.types import Interaction, Item, Recommendation, RecommendedItem, UserState

# (interactions with a vector, their (h, d) vectors, their (h,) weights)
_History = tuple[list[Interaction], FloatArray, npt.NDArray[np.float64]]


class IndexMismatchError(ValueError):
    """The index was not built for this model (wrong dimension)."""


@dataclass(frozen=True)
class RankingParams:
    """Ranking knobs.

    Attributes:
        k: items per recommendation list.
        fan_out: extra candidates fetched beyond k and the user's excluded items, to
            survive availability and near-duplicate filtering.
        exclude_seen: drop every item the user interacted with (``UserState.seen``, not
            bounded by the history length) and those in their recent history.
        near_duplicate_cosine: a candidate this similar to an already-chosen item is skipped.
        diversity_weight: MMR weight w in [0, 1]
            (:func:`streamrec.engine.serving.diversity.mmr_order`) over
            the eligible candidates; 0 keeps the score order.
        max_impressions: an item already recommended to the user this many times in the
            impressions window (``UserState.shown``) is not shown again; 0 turns it off.
        sources: the candidate sources the learned ranker draws from (:data:`SOURCES`).
        ranker_weights: (feature, weight) pairs replacing the learned ranker's weights of
            those features (standardised features,
            :class:`streamrec.engine.serving.ranker.LinearRanker`).
    """

    k: int = 10
    fan_out: int = 50
    exclude_seen: bool = True
    near_duplicate_cosine: float = 0.985
    diversity_weight: float = 0.0
    max_impressions: int = 0
    reasons: ReasonParams = field(default_factory=ReasonParams)
    reason_language: Language = "en"
    sources: tuple[str, ...] = SOURCES
    ranker_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(SOURCES)
        if unknown or not self.sources:
            msg = f"sources must be a non-empty subset of {SOURCES}, got {self.sources}"
            raise ValueError(msg)
        bad = {name for name, _ in self.ranker_weights} - set(FEATURES)
        if bad:
            msg = f"unknown ranker features {sorted(bad)}; known: {', '.join(FEATURES)}"
            raise ValueError(msg)


@dataclass(frozen=True)
class Ranked:
    """One ranked list plus the user vector that produced it ((d,), zeros if no history)."""

    recommendation: Recommendation
    user_vector: FloatArray


def index_entries(model: ItemModel) -> tuple[list[str], FloatArray]:
    """The ids and (n, query_dim + 1) index vectors of every item the model knows."""
    vectors = augment_items(model.index_vectors, model.log_popularity, model.scoring)
    return list(model.item_ids), vectors


def index_queries(model: ItemModel, limit: int = 1000, seed: int = 0) -> FloatArray:
    """Representative (q, query_dim + 1) queries for measuring an index of the model: the
    query vectors of one-item histories, for a seeded sample of at most ``limit`` items."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(model.n_items, size=min(limit, model.n_items), replace=False)
    users = model.embed_users([[model.item_ids[i]] for i in sample], [["view"]] * len(sample))
    return augment_user(users)


class Recommender:
    """Ranks items for users from a trained :class:`ItemModel`, an index and the catalog.

    Single-threaded: the stream layer calls it from one executor thread.

    Raises:
        IndexMismatchError: the index dimension is not the model's d + 1.
    """

    def __init__(
        self,
        model: ItemModel,
        index: CandidateIndex,
        catalog: Catalog,
        params: RankingParams | None = None,
    ) -> None:
        if index.dim != model.query_dim + 1:
            msg = (
                f"index dimension {index.dim} does not match model {model.version} "
                f"(expected {model.query_dim + 1}); rebuild it with `streamrec index build`"
            )
            raise IndexMismatchError(msg)
        self.model = model
        self.index = index
        self.catalog = catalog
        self.params = params or RankingParams()
        self._templates = TemplateGenerator(self.params.reason_language)
        self._row = model.index
        self._content_vectors: dict[str, FloatArray] = {}
        self._categories = CategoryCodes()
        self._row_category = self._categories.codes(model.item_categories)
        self._has_vector: npt.NDArray[np.bool_] = np.asarray(model.vectors.any(axis=1))
        self._log_popularity = normalised_log_popularity(model.popularity)
        self._by_popularity = [
            model.item_ids[i] for i in np.argsort(-model.popularity, kind="stable")
        ]
        self._popularity_rank = {item: r for r, item in enumerate(self._by_popularity)}
        # Each category's items, most popular first (the model's categories).
        self._popular_in: dict[str, list[str]] = {}
        for item_id in self._by_popularity:
            category = model.item_categories[self._row[item_id]]
            if category:
                self._popular_in.setdefault(category, []).append(item_id)

    def with_params(self, params: RankingParams) -> Recommender:
        """This recommender ranking with other knobs (an experiment's variant): the same
        model, index, catalog and caches, shared, not copied.

        Raises:
            ValueError: ``params`` choose candidate sources or ranker weights, and the
                model has no learned ranker to apply them to.
        """
        if params == self.params:
            return self
        ranker = self.model.ranker
        custom = params.ranker_weights or params.sources != SOURCES
        if custom and ranker is None:
            msg = (
                f"model {self.model.version} has no learned ranker (training keeps it only "
                "when it beats the model's order), so candidate sources and ranking "
                "weights cannot be changed"
            )
            raise ValueError(msg)
        other = copy.copy(self)
        other.params = params
        if params.reason_language != self.params.reason_language:
            other._templates = TemplateGenerator(params.reason_language)
        if ranker is not None and params.ranker_weights != self.params.ranker_weights:
            weights = ranker.weights.copy()
            for name, weight in params.ranker_weights:
                weights[FEATURES.index(name)] = weight
            other.model = dataclasses.replace(
                self.model, ranker=dataclasses.replace(ranker, weights=weights)
            )
        return other

    @property
    def model_version(self) -> str:
        return self.model.version

    def is_cold_start(self, item_id: str) -> bool:
        """True for items whose vector comes from their text, not from interactions: new
        items indexed from their content, and catalog-only items the model was trained with
        (items without text have no such vector, and no ``new_arrival`` claim)."""
        row = self._row.get(item_id)
        if row is None:  # indexed only from its text (items without text are not indexed)
            return item_id in self._content_vectors or item_id in self.index
        return bool(self.model.popularity[row] == 0 and self.model.vectors[row].any())

    def item_vector(self, item_id: str) -> FloatArray | None:
        """The (d,) vector of an item: learned, or from its content for new items."""
        row = self._row.get(item_id)
        if row is not None:
            vector: FloatArray = self.model.vectors[row]
            return vector
        content = self._content_vectors.get(item_id)
        if content is not None:
            return content
        indexed = self.index.vector(item_id)
        return None if indexed is None else indexed[: self.model.dim]

    def apply_item(self, item: Item) -> CatalogChange:
        """Take a new or changed catalog entry into account immediately.

        New items without interaction data get a vector from their text (the model's
        content encoder) and are indexed; ``available=False`` removes an item from the
        index (it stays in the catalog so histories can still name it).
        """
        change = self.catalog.put(item)
        if not item.available:
            self.index.remove([item.item_id])
            return change
        if (
            change.action == "unchanged"
            and item.item_id in self._row
            and item.item_id in self.index
        ):
            return change
        self._index_item(item, encode=True)
        return change

    def _index_item(self, item: Item, *, encode: bool) -> None:
        """Upsert one available item: its learned vector, or its content vector (encoded
        from its text when ``encode`` or not cached yet)."""
        row = self._row.get(item.item_id)
        if row is None:
            if self.model.content is None or not has_text(
                item.item_id, item.title, item.category, item.tags, item.description or ""
            ):
                # No encoder, or nothing to encode (a vector from the id would place the
                # item at random): the item waits for interaction data.
                self._content_vectors.pop(item.item_id, None)
                self.index.remove([item.item_id])
                return
            vector = self._content_vectors.get(item.item_id)
            if encode or vector is None:
                vector = self.model.content.encode(
                    item.title, item.category, list(item.tags), item.description or ""
                )
                self._content_vectors[item.item_id] = vector
            # The encoder has no embedding for an item it never saw: only the content part.
            indexed = np.concatenate([vector, np.zeros(self.model.sequence_dim, np.float32)])
            pop = np.zeros(1, dtype=np.float32)
        else:
            indexed = self.model.index_vectors[row]
            pop = self._log_popularity[row : row + 1]
        vectors = augment_items(indexed[None, :], pop, self.model.scoring)
        current = self.index.vector(item.item_id)
        if current is not None and np.array_equal(current, vectors[0]):
            return  # already indexed as it is (e.g. by `streamrec index build`): no churn
        self.index.upsert([item.item_id], vectors)

    def swap_index(self, index: CandidateIndex) -> int:
        """Serve from ``index`` from now on (e.g. a rebuilt one, tuned for a grown catalog).

        The catalog as this recommender knows it is replayed onto the new index first:
        unavailable items are removed, items indexed from their text are upserted with
        their current vectors, and available items it lacks are indexed.

        Returns:
            How many items were upserted into the new index.

        Raises:
            IndexMismatchError: the index dimension is not the model's query_dim + 1 (the
                old index stays in use).
        """
        if index.dim != self.model.query_dim + 1:
            msg = (
                f"index dimension {index.dim} does not match model {self.model.version} "
                f"(expected {self.model.query_dim + 1}); keeping the current index"
            )
            raise IndexMismatchError(msg)
        gone = [i.item_id for i in self.catalog if not i.available and i.item_id in index]
        index.remove(gone)
        previous, self.index = self.index, index
        upserted = 0
        try:
            for item in self.catalog:
                if item.available and (
                    item.item_id in self._content_vectors or item.item_id not in index
                ):
                    self._index_item(item, encode=False)
                    upserted += 1
        except Exception:
            self.index = previous
            raise
        return upserted

    def user_vector(self, state: UserState) -> FloatArray:
        """The user's (query_dim,) query vector from their recent events; zeros for none.

        Identical to ``ItemModel.embed_user`` (offline evaluation) for items the model
        knows; cold-start items count in the linear part with their content vectors.
        """
        user: FloatArray = self._embed_all([state], [self._history(state)])[0]
        return user

    def _embed_all(self, states: Sequence[UserState], histories: Sequence[_History]) -> FloatArray:
        """(u, query_dim) query vectors, as offline (:func:`embed_histories`)."""
        return embed_histories(
            self.model,
            [h[1] for h in histories],
            [h[2] for h in histories],
            [
                self.model.sequence_rows(
                    [i.item_id for i in state.history], [i.type for i in state.history]
                )
                for state in states
            ],
        )

    def recommend(
        self,
        states: Sequence[UserState],
        trigger_event_ids: Sequence[str],
        now_ms: int,
        stats: ItemStats | None = None,
    ) -> list[Ranked]:
        """One ranked list per user state, with one index search for the whole batch.

        ``stats`` (plain data, read by the caller) back trending and bought/viewed-together
        reasons; without them those reasons are never given."""
        histories = [self._history(state) for state in states]
        vectors = list(self._embed_all(states, histories))
        excluded = [self._excluded(state) for state in states]
        personal = [i for i, v in enumerate(vectors) if np.any(v)]
        searched = self._search(personal, vectors, excluded)
        hits = [searched.get(i, Hits((), ())) for i in range(len(states))]
        if self.model.ranker is not None:
            hits = self._reranked(states, hits, excluded, vectors, stats)
        out = []
        for i, state in enumerate(states):
            rec = Recommendation(
                user_id=state.user_id,
                trigger_event_id=trigger_event_ids[i],
                generated_at=now_ms,
                model_version=self.model.version,
                items=tuple(
                    self._rank(state, histories[i], vectors[i], hits[i], excluded[i], stats)
                ),
            )
            out.append(Ranked(rec, vectors[i]))
        return out

    def _search(
        self, users: Sequence[int], vectors: Sequence[FloatArray], excluded: Sequence[set[str]]
    ) -> dict[int, Hits]:
        """One index search for the batch's ``users``, deep enough for each to survive its
        exclusions: the batch asks for what 9 in 10 of them need, and the few with longer
        exclusion lists (heavy users) get a second, deeper search of their own."""
        if not users:
            return {}
        base = self.params.k + self.params.fan_out
        if self.model.ranker is not None:
            base = max(base, self.model.ranker.settings.candidates)
        need = np.asarray([len(excluded[i]) for i in users])
        cap = int(np.percentile(need, 90))
        queries = augment_user(np.stack([vectors[i] for i in users]))
        hits = dict(zip(users, self.index.search(queries, base + cap), strict=True))
        deep = np.flatnonzero(need > cap)
        if len(deep):
            more = self.index.search(queries[deep], base + int(need[deep].max()))
            hits.update(zip([users[int(j)] for j in deep], more, strict=True))
        return hits

    def _history(self, state: UserState) -> _History:
        """The last ``max_history`` interactions that have a vector, their (h, d) vectors
        and (h,) weights (:func:`history_window`, as ``ItemModel.history``); cold-start
        items count with their content vectors."""
        start, weights = history_window([i.type for i in state.history], self.model.user_params)
        recent = state.history[start:]
        known = [self._row.get(i.item_id) for i in recent]
        if None not in known:  # the usual case: every item is the model's, one gather
            vectors = self.model.vectors[np.asarray(known, dtype=np.intp)]
            return list(recent), vectors.astype(np.float32, copy=False), weights
        kept, rows, kept_weights = [], [], []
        for interaction, weight in zip(recent, weights, strict=True):
            vector = self.item_vector(interaction.item_id)
            if vector is not None:
                kept.append(interaction)
                rows.append(vector)
                kept_weights.append(weight)
        if not rows:
            empty = np.zeros((0, self.model.dim), dtype=np.float32)
            return [], empty, np.zeros(0, dtype=np.float64)
        return kept, np.stack(rows).astype(np.float32), np.asarray(kept_weights, dtype=np.float64)

    def _excluded(self, state: UserState) -> set[str]:
        excluded = set(state.purchased)
        if self.params.max_impressions > 0:
            limit = self.params.max_impressions
            excluded.update(item for item, times in state.shown.items() if times >= limit)
        if self.params.exclude_seen:
            excluded.update(state.seen)
            excluded.update(i.item_id for i in state.history)
        return excluded

    def _rank(
        self,
        state: UserState,
        history: _History,
        user_vec: FloatArray,
        hits: Hits,
        excluded: set[str],
        stats: ItemStats | None = None,
    ) -> list[RecommendedItem]:
        chosen, vectors = self._choose(hits, excluded)
        return self._explain(state, history, user_vec, chosen, vectors, hits, excluded, stats)

    def _choose(self, hits: Hits, excluded: set[str]) -> tuple[list[tuple[str, float]], FloatArray]:
        """The list's items and scores, in order, with their (n, d) vectors: the hits
        left after the filters (excluded, unavailable, unknown, same title, near
        duplicates), then the diversity order when it is on."""
        chosen: list[tuple[str, float]] = []
        # The chosen items that can be another's product, by category: (position, words).
        products: dict[str, list[tuple[int, frozenset[str]]]] = {}
        titles: set[str] = set()
        diversify = self.params.diversity_weight > 0
        pool = self.params.k + self.params.fan_out if diversify else self.params.k
        vectors = np.empty((pool, self.model.dim), dtype=np.float32)  # row n: chosen[n]'s
        for item_id, score in zip(hits.item_ids, hits.scores, strict=True):
            if len(chosen) == pool:
                break
            if item_id in excluded or not self.catalog.is_available(item_id):
                continue
            row = self._row.get(item_id)
            if row is not None:  # the usual case: a model row, known to be non-zero or not
                if not self._has_vector[row]:
                    continue
                vector = self.model.vectors[row]
            else:
                vector = self.item_vector(item_id)
                if vector is None or not vector.any():
                    continue  # nothing known of the item: no interactions, no text
            item = self._item(item_id)
            title = title_key(item.title)
            if title and title in titles:
                continue
            n = len(chosen)
            words = product_words(item)
            if words is not None:
                if self._near_duplicate(words, vector, products.get(item.category), vectors[:n]):
                    continue
                products.setdefault(item.category, []).append((n, words))
            vectors[n] = vector
            chosen.append((item_id, score))
            titles.add(title)
        vectors = vectors[: len(chosen)]
        if diversify and chosen:
            order = mmr_order(
                np.asarray([s for _, s in chosen]),
                vectors,
                self.params.k,
                self.params.diversity_weight,
            )
            chosen = [chosen[i] for i in order]
            vectors = vectors[order]
        return chosen, vectors

    def _explain(
        self,
        state: UserState,
        history: _History,
        user_vec: FloatArray,
        chosen: list[tuple[str, float]],
        vectors: FloatArray,
        hits: Hits,
        excluded: set[str],
        stats: ItemStats | None,
    ) -> list[RecommendedItem]:
        """The chosen items with their reasons and sentences, followed by the popular
        fill-up when the list is short."""
        ranked = self.model.ranker is not None
        usable, hist_vectors, weights = history
        hist_items = [self.catalog.get(i.item_id) for i in usable]
        # Habits count items, not actions: a view and a purchase of one item are one item.
        recent = dict(zip((i.item_id for i in usable), hist_items, strict=True))
        categories = category_counts(recent.values())
        tags = tag_counts(recent.values())
        citable = CitableHistory(usable, hist_items)
        partners = SessionPartners(state.history, self.catalog.get, stats, self.params.reasons)
        picked: list[tuple[str, float, Reason]] = []
        parts, cosines = explanation_rows(hist_vectors, weights, vectors)
        cited = citable.cite_rows(parts, self.params.reasons, cosines)
        for (item_id, score), item_cited in zip(chosen, cited, strict=True):
            reason = build_reason(
                self._item(item_id),
                cited=item_cited,
                categories=categories,
                history_length=len(recent),
                cold_start_item=self.is_cold_start(item_id),
                popularity=self._popularity(item_id),
                params=self.params.reasons,
                tags=tags,
                bought_with=partners.bought(item_id),
                viewed_with=partners.viewed(item_id),
                trend=_trend(stats, item_id),
            )
            picked.append((item_id, score, reason))
        if len(picked) < self.params.k:
            taken = excluded | {i for i, _ in chosen}
            filler = self._popular(state, user_vec, taken, len(picked), stats)
            if ranked and filler and picked:
                filler = self._rescored_filler(state, filler, len(hits.item_ids))
            picked += _below(filler, picked[-1][1] if picked else math.inf)
        # One call per list, so that no sentence repeats within it.
        texts = self._templates.render_list(
            [(r.code, r.evidence) for _, _, r in picked], [i for i, _, _ in picked]
        )
        return [
            RecommendedItem(item_id, rank, score, text, reason.code, reason.evidence)
            for rank, ((item_id, score, reason), text) in enumerate(
                zip(picked, texts, strict=True), start=1
            )
        ]

    def _near_duplicate(
        self,
        words: frozenset[str],
        vector: FloatArray,
        same_category: Sequence[tuple[int, frozenset[str]]] | None,
        vectors: FloatArray,
    ) -> bool:
        """Whether an item repeats one already chosen: the same product by its metadata
        (:func:`~streamrec.engine.serving.catalog.same_product`: its title ``words``
        against those of the chosen items in its category, ``same_category``) *and*
        vectors at least ``near_duplicate_cosine`` alike (``vectors``: the chosen items').
        Close vectors alone are not enough: on sparse logs many unrelated items have
        nearly identical ones. The metadata goes first: most items are no chosen item's
        product, and then no vector product is needed."""
        if not same_category:
            return False
        same = [n for n, other in same_category if same_words(words, other)]
        if not same:
            return False
        close = vectors @ vector >= self.params.near_duplicate_cosine
        return bool(close[same].any())

    def _popular(
        self,
        state: UserState,
        user_vec: FloatArray,
        excluded: set[str],
        start: int,
        stats: ItemStats | None = None,
    ) -> list[tuple[str, float, Reason]]:
        """Most popular available items not in ``excluded``, to follow ``start`` others:
        first those in the categories of the user's events (a new user's first clicks say
        where to look), then any.

        Their score is the scoring function's (popularity alone for a user without
        history), never a made-up number."""
        recent = {i.item_id: self.catalog.get(i.item_id) for i in state.history}
        categories = category_counts(recent.values())
        in_mine = [self._popular_in.get(c, []) for c in categories]
        order = itertools.chain(
            heapq.merge(*in_mine, key=self._popularity_rank.__getitem__), self._by_popularity
        )
        items: list[tuple[str, float, Reason]] = []
        offered: set[str] = set()
        for item_id in order:
            if start + len(items) == self.params.k:
                break
            if item_id in excluded or item_id in offered or not self.catalog.is_available(item_id):
                continue
            offered.add(item_id)
            reason = build_reason(
                self._item(item_id),
                cited=[],
                categories=categories,
                history_length=len(recent),
                cold_start_item=False,
                popularity=self._popularity(item_id),
                params=self.params.reasons,
                trend=_trend(stats, item_id),
            )
            row = self._row[item_id]
            score = float(
                score_items(
                    user_vec,
                    self.model.index_vectors[row : row + 1],
                    self._log_popularity[row : row + 1],
                    self.model.scoring,
                )[0]
            )
            items.append((item_id, score, reason))
        return items

    def _block(
        self,
        state: UserState,
        item_ids: Sequence[str],
        scores: npt.NDArray[np.floating],
        sources: npt.NDArray[np.bool_],
    ) -> CandidateBlock:
        """One user's candidates as the ranker's features read them (model rows, category
        codes, prices and popularity by gathers; the catalog's for items without a row)."""
        assert self.model.ranker is not None  # noqa: S101 - checked by the caller
        settings = self.model.ranker.settings
        rows, categories, prices = self._attributes(item_ids)
        known = rows >= 0
        at = np.where(known, rows, 0)
        window = max(settings.session, settings.category_window)
        recent_rows, recent_categories, recent_prices = self._attributes(
            [i.item_id for i in state.history[-window:]]
        )
        return CandidateBlock(
            scores=scores,
            rows=rows,
            sources=sources,
            categories=categories,
            prices=prices,
            popularity=np.where(known, self.model.log_popularity[at], 0.0),
            recent_rows=recent_rows.tolist(),
            recent_categories=recent_categories,
            recent_prices=recent_prices.tolist(),
        )

    def _attributes(
        self, item_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The items' model rows (-1 for none), category codes and prices by gathers: the
        model's for the items it knows (as offline), the catalog's for the others."""
        rows = np.fromiter(map(self._row.get, item_ids, itertools.repeat(-1)), np.intp)
        known = rows >= 0
        categories = np.where(known, self._row_category[np.where(known, rows, 0)], -1)
        prices = np.full(len(rows), math.nan, dtype=np.float64)
        if self.model.item_prices is not None:
            prices[known] = self.model.item_prices[rows[known]]
        for j in np.flatnonzero(~known).tolist():
            prices[j] = self._price(item_ids[j])
            categories[j] = self._categories.code(self._category(item_ids[j]))
        return rows, categories, prices

    def _category(self, item_id: str) -> str:
        """The model's category for items it knows (as offline), else the catalog's."""
        row = self._row.get(item_id)
        if row is not None:
            return self.model.item_categories[row]
        item = self.catalog.get(item_id)
        return "" if item is None else item.category

    def _price(self, item_id: str) -> float:
        """The model's price for items it knows (as offline), else the catalog's."""
        row = self._row.get(item_id)
        if row is not None:
            return self.model.item_price(row)
        item = self.catalog.get(item_id)
        return math.nan if item is None or item.price is None else float(item.price)

    def _reranked(
        self,
        states: Sequence[UserState],
        hits: Sequence[Hits],
        excluded: Sequence[set[str]],
        vectors: Sequence[FloatArray],
        stats: ItemStats | None,
    ) -> list[Hits]:
        """The ranker's order of each user's candidates from every source (the items the
        offline :meth:`ItemModel.reranked` puts on top), with its scores: the
        ``candidates`` best unseen hits, the user's co-occurrence partners, trending
        items and the newest items indexed from their text. The features of the whole
        batch are one matrix, scored at once."""
        ranker, table = self.model.ranker, self.model.cotable
        assert ranker is not None  # noqa: S101 - checked by the caller
        assert table is not None  # noqa: S101 - comes with the ranker
        session = ranker.settings.session
        partners = table.partners_batch(
            [[self._row.get(i.item_id, -1) for i in s.history[-session:]] for s in states],
            ranker.settings.co_candidates,
            [_RowsIn(banned, self.model.item_ids) for banned in excluded],
        )
        candidates: list[list[str]] = []
        blocks: list[CandidateBlock] = []
        for state, found, banned, user_vec, co in zip(
            states, hits, excluded, vectors, partners, strict=True
        ):
            ids, scores, flags = self._candidates(state, found, banned, user_vec, co, stats)
            candidates.append(ids)
            blocks.append(self._block(state, ids, scores, flags))
        learned = self._learned(blocks)
        out, start = [], 0
        for ids in candidates:
            mine = tie_broken(learned[start : start + len(ids)])
            start += len(ids)
            order = np.argsort(-mine, kind="stable")
            out.append(
                Hits(tuple(map(ids.__getitem__, order.tolist())), tuple(mine[order].tolist()))
            )
        return out

    def _learned(self, blocks: Sequence[CandidateBlock]) -> npt.NDArray[np.float64]:
        """The ranker's scores of every block's candidates, block after block."""
        ranker, table = self.model.ranker, self.model.cotable
        assert ranker is not None  # noqa: S101 - checked by the caller
        assert table is not None  # noqa: S101 - comes with the ranker
        settings = ranker.settings
        features = batch_features(
            blocks, table, session=settings.session, category_window=settings.category_window
        )
        learned: npt.NDArray[np.float64] = ranker.score(features)
        return learned

    def _candidates(
        self,
        state: UserState,
        hits: Hits,
        excluded: set[str],
        user_vec: FloatArray,
        partners: Sequence[int],
        stats: ItemStats | None,
    ) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """One user's candidates from every source, best model score first: their ids,
        scores and source flags (items no longer indexed are dropped). ``partners``: the
        co-occurrence source's rows, found for the whole batch."""
        ranker = self.model.ranker
        assert ranker is not None  # noqa: S101 - checked by the caller
        keys, flags = gather_candidates(
            ann=hits.item_ids,
            partners=partners,
            trending=() if stats is None else stats.ranked_trending,
            # The newest first: a catalog may hold 100,000 items indexed from their text,
            # and the source stops at the number it needs.
            fresh=(i for i in reversed(self._content_vectors) if self.catalog.is_available(i)),
            key_of_row=self.model.item_ids.__getitem__,
            excluded=excluded.__contains__,
            settings=ranker.settings,
            use=self.params.sources,
        )
        hit_score = dict(zip(hits.item_ids, hits.scores, strict=True))
        found = list(map(hit_score.get, keys))
        if None in found:  # candidates the search did not return: score their vectors
            query = augment_user(user_vec[None, :])[0]
            for k, item_id in enumerate(keys):
                if found[k] is None:
                    indexed = self.index.vector(item_id)
                    # Not indexed (unavailable): never served, dropped below.
                    found[k] = None if indexed is None else float(indexed @ query)
        if None in found:  # some are no longer indexed: drop them
            kept = [k for k, score in enumerate(found) if score is not None]
            keys, flags = [keys[k] for k in kept], flags[kept]
            found = [found[k] for k in kept]
        if not keys:
            return [], np.zeros(0), np.zeros((0, len(SOURCES)), dtype=bool)
        scores = np.asarray(found, dtype=np.float64)
        by_score = score_order(scores)
        return list(map(keys.__getitem__, by_score.tolist())), scores[by_score], flags[by_score]

    def _rescored_filler(
        self, state: UserState, filler: list[tuple[str, float, Reason]], after: int
    ) -> list[tuple[str, float, Reason]]:
        """Popular fill-up items scored by the ranker too (as candidates ranked after the
        ``after`` re-ranked ones, proposed by no source), so one list carries one kind of
        score."""
        ranker, table = self.model.ranker, self.model.cotable
        assert ranker is not None  # noqa: S101 - checked by the caller
        assert table is not None  # noqa: S101 - comes with the ranker
        ids = [i for i, _, _ in filler]
        base = np.asarray([s for _, s, _ in filler], dtype=np.float64)
        none = np.zeros((len(ids), len(SOURCES)), dtype=bool)
        features = batch_features(
            [self._block(state, ids, base, none)],
            table,
            session=ranker.settings.session,
            category_window=ranker.settings.category_window,
        )
        features[:, 1] = np.log1p(after + np.arange(len(ids)))
        learned = ranker.score(features)
        return [
            (item_id, float(score), reason)
            for (item_id, _, reason), score in zip(filler, learned, strict=True)
        ]

    def _item(self, item_id: str) -> Item:
        item = self.catalog.get(item_id)
        if item is None:
            msg = f"item {item_id!r} passed the availability filter but is not in the catalog"
            raise KeyError(msg)
        return item

    def _popularity(self, item_id: str) -> int:
        row = self._row.get(item_id)
        return 0 if row is None else int(self.model.popularity[row])


class _RowsIn:
    """Model rows whose item id is in a set of ids (``row in rows_in``), checked row by
    row: the co-occurrence source asks about a few dozen rows, not about every item a
    heavy user has seen."""

    __slots__ = ("_ids", "_item_ids")

    def __init__(self, ids: set[str], item_ids: Sequence[str]) -> None:
        self._ids, self._item_ids = ids, item_ids

    def __contains__(self, row: object) -> bool:
        return isinstance(row, int) and self._item_ids[row] in self._ids


def _trend(stats: ItemStats | None, item_id: str) -> dict[str, object] | None:
    found = None if stats is None else stats.trending.get(item_id)
    return None if found is None or stats is None else trend_evidence(found, stats.half_life_s)


def _below(
    filler: list[tuple[str, float, Reason]], ceiling: float
) -> list[tuple[str, float, Reason]]:
    """The popular fill-up, in its own order, after every personal candidate: as offline,
    where the candidates' scores sit above every other item's. A fill item's score is its
    own, capped at the score of the item above it so that the list stays in order (the
    fill is not what the ranker was validated on, so it never outranks a candidate)."""
    out = []
    for item_id, score, reason in filler:
        ceiling = min(score, ceiling)
        out.append((item_id, ceiling, reason))
    return out
