"""The recommender: user state in, ranked items with reasons out. Pure, no I/O.

Per user: the user vector is computed from the vectors of their recent items
(:mod:`engine.user_embedding`, the same code as offline evaluation), candidates come from
the index, are filtered (purchased, unavailable, already seen), scored
(:mod:`engine.scoring`), de-duplicated and explained (:mod:`engine.reasons`).
Users without usable history get the most popular available items, labelled as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.catalog import Catalog, CatalogChange
from engine.model import ItemModel
from engine.ports import CandidateIndex, FloatArray
from engine.reasons import ReasonParams, build_reason, category_counts, similar_items_evidence
from engine.scoring import normalised_log_popularity, score_items
from engine.types import Interaction, Item, Recommendation, RecommendedItem, UserState
from engine.user_embedding import contributions, history_weights, user_embedding

_TITLE_NOISE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class RankingParams:
    """Ranking knobs.

    Attributes:
        k: items per recommendation list.
        fan_out: ANN candidates fetched per user before filtering.
        exclude_seen: drop items already in the user's recent history.
        near_duplicate_cosine: a candidate this similar to an already-chosen item is skipped.
    """

    k: int = 10
    fan_out: int = 200
    exclude_seen: bool = True
    near_duplicate_cosine: float = 0.985
    reasons: ReasonParams = field(default_factory=ReasonParams)


@dataclass(frozen=True)
class Ranked:
    """One ranked list plus the user vector that produced it ((d,), zeros if no history)."""

    recommendation: Recommendation
    user_vector: FloatArray


class Recommender:
    """Ranks items for users from a trained :class:`ItemModel`, an index and the catalog.

    Single-threaded: the stream layer calls it from one executor thread.
    """

    def __init__(
        self,
        model: ItemModel,
        index: CandidateIndex,
        catalog: Catalog,
        params: RankingParams | None = None,
    ) -> None:
        self.model = model
        self.index = index
        self.catalog = catalog
        self.params = params or RankingParams()
        self._row = {item_id: row for row, item_id in enumerate(model.item_ids)}
        self._content_vectors: dict[str, FloatArray] = {}
        self._log_popularity = normalised_log_popularity(model.popularity)
        self._by_popularity = [
            model.item_ids[i] for i in np.argsort(-model.popularity, kind="stable")
        ]

    @property
    def model_version(self) -> str:
        return self.model.version

    def is_cold_start(self, item_id: str) -> bool:
        """True for items indexed from their content (no interaction data in the model)."""
        return item_id not in self._row

    def item_vector(self, item_id: str) -> FloatArray | None:
        row = self._row.get(item_id)
        if row is not None:
            vector: FloatArray = self.model.vectors[row]
            return vector
        content = self._content_vectors.get(item_id)
        return content if content is not None else self.index.vector(item_id)

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
        if item.item_id not in self._row:
            if self.model.content is None:
                return change  # no content encoder: the item waits for interaction data
            vector = self.model.content.encode(
                item.title, item.category, list(item.tags), item.description or ""
            )
            self._content_vectors[item.item_id] = vector
        elif change.action == "unchanged" and item.item_id in self.index:
            return change
        vector_or_none = self.item_vector(item.item_id)
        if vector_or_none is not None:
            self.index.upsert([item.item_id], vector_or_none[None, :])
        return change

    def user_vector(self, state: UserState) -> FloatArray:
        """The user's (d,) vector from their recent items; zeros when none has a vector.

        Identical to ``ItemModel.embed_user`` (offline evaluation) for items the model
        knows; cold-start items count with their content vectors.
        """
        _, vectors, weights = self._history(state)
        if not len(weights):
            return np.zeros(self.index.dim, dtype=np.float32)
        return user_embedding(vectors, weights)

    def recommend(
        self, states: Sequence[UserState], trigger_event_ids: Sequence[str], now_ms: int
    ) -> list[Ranked]:
        """One ranked list per user state, with one index search for the whole batch."""
        vectors = [self.user_vector(state) for state in states]
        personal = [i for i, v in enumerate(vectors) if np.any(v)]
        hits = {}
        if personal:
            longest = max(len(states[i].history) + len(states[i].purchased) for i in personal)
            fetch = self.params.fan_out + longest
            found = self.index.search(np.stack([vectors[i] for i in personal]), fetch)
            hits = dict(zip(personal, found, strict=True))
        out = []
        for i, state in enumerate(states):
            if i in hits:
                items = self._rank_personal(state, vectors[i], list(hits[i].item_ids))
            else:
                items = self._rank_popular(state)
            rec = Recommendation(
                user_id=state.user_id,
                trigger_event_id=trigger_event_ids[i],
                generated_at=now_ms,
                model_version=self.model.version,
                items=tuple(items),
            )
            out.append(Ranked(rec, vectors[i]))
        return out

    def _history(
        self, state: UserState
    ) -> tuple[list[Interaction], FloatArray, npt.NDArray[np.float64]]:
        """The last ``max_history`` interactions that have a vector, their (h, d) vectors
        and (h,) weights. Weights are computed over all of the last ``max_history``
        events before unknown items are dropped, exactly as ``ItemModel.history`` does."""
        recent = state.history[-self.model.user_params.max_history :]
        weights = history_weights([i.type for i in recent], self.model.user_params)
        kept, rows, kept_weights = [], [], []
        for interaction, weight in zip(recent, weights, strict=True):
            vector = self.item_vector(interaction.item_id)
            if vector is not None:
                kept.append(interaction)
                rows.append(vector)
                kept_weights.append(weight)
        if not rows:
            empty = np.zeros((0, self.index.dim), dtype=np.float32)
            return [], empty, np.zeros(0, dtype=np.float64)
        return kept, np.stack(rows).astype(np.float32), np.asarray(kept_weights, dtype=np.float64)

    def _excluded(self, state: UserState) -> set[str]:
        excluded = set(state.purchased)
        if self.params.exclude_seen:
            excluded.update(i.item_id for i in state.history)
        return excluded

    def _rank_personal(
        self, state: UserState, user_vec: FloatArray, candidates: list[str]
    ) -> list[RecommendedItem]:
        excluded = self._excluded(state)
        keep = [c for c in candidates if c not in excluded and self.catalog.is_available(c)]
        if not keep:
            return self._rank_popular(state)
        cand_vectors = np.stack([self._vector(c) for c in keep])
        log_pop = np.array([self._log_pop(c) for c in keep], dtype=np.float32)
        scores = score_items(user_vec, cand_vectors, log_pop, self.model.scoring)
        order = np.argsort(-scores, kind="stable")
        chosen = self._dedupe([keep[j] for j in order], cand_vectors[order], scores[order])

        usable, hist_vectors, weights = self._history(state)
        hist_items = [self.catalog.get(i.item_id) for i in usable]
        categories = category_counts(hist_items)
        ranked = []
        for rank, (item_id, vector, score) in enumerate(chosen, start=1):
            item = self._item(item_id)
            shares = contributions(hist_vectors, weights, vector)
            cited = similar_items_evidence(usable, hist_items, shares, self.params.reasons)
            reason = build_reason(
                item,
                cited=cited,
                categories=categories,
                history_length=len(usable),
                cold_start_item=self.is_cold_start(item_id),
                popularity=self._popularity(item_id),
                params=self.params.reasons,
            )
            ranked.append(
                RecommendedItem(
                    item_id, rank, float(score), reason.text, reason.code, reason.evidence
                )
            )
        return ranked

    def _dedupe(
        self, ids: list[str], vectors: FloatArray, scores: FloatArray
    ) -> list[tuple[str, FloatArray, float]]:
        chosen: list[tuple[str, FloatArray, float]] = []
        titles: set[str] = set()
        for item_id, vector, score in zip(ids, vectors, scores, strict=True):
            item = self.catalog.get(item_id)
            title = _TITLE_NOISE.sub(" ", item.title.lower()).strip() if item else item_id
            if title in titles:
                continue
            if any(float(vector @ v) >= self.params.near_duplicate_cosine for _, v, _ in chosen):
                continue
            chosen.append((item_id, vector, float(score)))
            titles.add(title)
            if len(chosen) == self.params.k:
                break
        return chosen

    def _rank_popular(self, state: UserState) -> list[RecommendedItem]:
        excluded = self._excluded(state)
        items: list[RecommendedItem] = []
        for item_id in self._by_popularity:
            if item_id in excluded or not self.catalog.is_available(item_id):
                continue
            item = self._item(item_id)
            reason = build_reason(
                item,
                cited=[],
                categories=category_counts([]),
                history_length=len(state.history),
                cold_start_item=False,
                popularity=self._popularity(item_id),
                params=self.params.reasons,
            )
            score = float(self._log_pop(item_id))
            items.append(
                RecommendedItem(
                    item_id, len(items) + 1, score, reason.text, reason.code, reason.evidence
                )
            )
            if len(items) == self.params.k:
                break
        return items

    def _item(self, item_id: str) -> Item:
        item = self.catalog.get(item_id)
        if item is None:
            msg = f"item {item_id!r} passed the availability filter but is not in the catalog"
            raise KeyError(msg)
        return item

    def _vector(self, item_id: str) -> FloatArray:
        vector = self.item_vector(item_id)
        if vector is None:
            msg = f"item {item_id!r} is indexed but has no vector"
            raise KeyError(msg)
        return vector

    def _popularity(self, item_id: str) -> int:
        row = self._row.get(item_id)
        return 0 if row is None else int(self.model.popularity[row])

    def _log_pop(self, item_id: str) -> float:
        row = self._row.get(item_id)
        return 0.0 if row is None else float(self._log_popularity[row])
