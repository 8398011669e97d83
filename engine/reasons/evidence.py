"""Evidence: which facts explain a recommended item, and which reason code they support.

Evidence is computed from the same numbers that ranked the item (per-history-item
contributions to the score, category and tag counts of the user's history, popularity
counts). Shapes, by code::

    similar_to_recent  {"items": [{item_id, title, event, share}, ...], "also"?: habit}
    bought_together    {"bought_with": {item_id, title, event}, "count"}
    category_affinity  {"category", "count", "of_recent"}
    tag_affinity       {"tag", "count", "of_recent"}
    viewed_together    {"viewed_with": {item_id, title, event}, "count"}
    new_arrival        {"category", "similar_items": [{item_id, title, event, share}, ...]}
    trending           {"count", "rank", "half_life": {"value", "unit"}}
    popular            {"interactions", "user_history"}

``bought_with`` / ``viewed_with`` is an item of the user's session (``event`` is the
user's latest action on it) and ``count`` how often shoppers bought / viewed it together
with the recommended item. ``trending``'s ``count`` is the item's time-decayed event count
(rounded), ``rank`` its place among trending items, and ``half_life`` the time after which
an event counts half (:mod:`streamrec.engine.serving.item_stats`).

``also`` is an optional secondary signal: a category or tag habit that holds for the item
too, ``{"code": "category_affinity"|"tag_affinity", <its evidence fields>}``.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.engine.reasons._types import Evidence
from streamrec.engine.reasons.templates import render
from streamrec.engine.serving.item_stats import ItemStats, TrendingItem, best_partner, session_items
from streamrec.engine.types import Interaction, Item


@dataclass(frozen=True)
class ReasonParams:
    """How much of the score an item must explain to be cited, and how many to cite.

    Attributes:
        min_share: least share of the positive score contributions a cited item explains.
        min_similarity: least cosine similarity between a cited item and the recommended
            one. One item of a short history explains all of the positive score of any
            item; without this floor a user with one view was told "similar to" it on
            items no closer to it than a random pair (cosine 0.02-0.07). 9 in 10 random
            pairs of items stay below 0.17 in the ML-100K co-occurrence model.
        max_cited: most history items cited per reason.
        min_category_count: least number of recent items in the candidate's category for
            a category reason.
        min_tag_count: least number of recent items sharing a tag with the candidate for
            a tag reason.
        min_together_count: least co-occurrence count for a bought/viewed-together reason.
        session_window: the user's session: the items of their last this many interactions.
    """

    min_share: float = 0.2
    min_similarity: float = 0.2
    max_cited: int = 2
    min_category_count: int = 2
    min_tag_count: int = 2
    min_together_count: int = 2
    session_window: int = 5


@dataclass(frozen=True)
class Reason:
    """A reason code, the evidence behind it and its default (English) sentence.

    The sentence is rendered when asked for (``rendered`` overrides it): the recommender
    renders a whole list at once, so that no sentence repeats within it, and never needs
    each reason's own.
    """

    code: str
    evidence: Evidence
    rendered: str | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The canonical English sentence for the code and evidence."""
        return render(self.code, self.evidence) if self.rendered is None else self.rendered


class CitableHistory:
    """A user's recent items prepared once per list, to cite the ones behind each item.

    Args:
        history: the user's recent interactions with a vector, oldest first (h,).
        history_items: catalog entries of those interactions (None when unknown) (h,).
    """

    def __init__(self, history: Sequence[Interaction], history_items: Sequence[Item | None]):
        ids: dict[str, int] = {}
        codes = np.empty(len(history), dtype=np.intp)
        last_event: dict[str, str] = {}
        titles: dict[str, str | None] = {}
        for n, (interaction, item) in enumerate(zip(history, history_items, strict=True)):
            codes[n] = ids.setdefault(interaction.item_id, len(ids))
            last_event[interaction.item_id] = interaction.type  # the most recent action
            titles[interaction.item_id] = None if item is None else item.title
        self._codes = codes
        self._ids = list(ids)
        self._last_event = last_event
        self._titles = titles

    def cite(
        self,
        contributions: npt.NDArray[np.floating[Any]],
        params: ReasonParams,
        similarities: npt.NDArray[np.floating[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The recent items that explain most of a candidate's score, strongest first.

        Args:
            contributions: each history entry's part of the candidate's score (h,); the
                parts of repeated items add up.
            params: citation thresholds.
            similarities: each history entry's cosine similarity to the candidate (h,);
                None: not checked.

        Returns:
            Up to ``params.max_cited`` entries {item_id, title, event, share} whose share of
            the positive contributions is at least ``params.min_share`` and whose
            similarity to the candidate is at least ``params.min_similarity``; items
            without a catalog title are never cited.
        """
        sims = None if similarities is None else np.asarray(similarities)[None, :]
        return self.cite_rows(np.asarray(contributions)[None, :], params, sims)[0]

    def cite_rows(
        self,
        contributions: npt.NDArray[np.floating[Any]],
        params: ReasonParams,
        similarities: npt.NDArray[np.floating[Any]] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """:meth:`cite` for many candidates at once, one row of ``contributions`` and of
        ``similarities`` (n, h) each."""
        rows = np.asarray(contributions, dtype=np.float64)
        n = rows.shape[0]
        if n == 0 or not self._ids:
            return [[] for _ in range(n)]
        positive = np.clip(rows, 0.0, None)
        totals = positive.sum(axis=1)
        # The parts of a repeated item add up: sum the columns of each distinct item.
        onehot = np.zeros((len(self._codes), len(self._ids)), dtype=np.float64)
        onehot[np.arange(len(self._codes)), self._codes] = 1.0
        per_item = positive @ onehot
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = per_item / totals[:, None]  # NaN where nothing is positive
        citable = shares >= params.min_share
        if similarities is not None:
            close = np.asarray(similarities, dtype=np.float64) >= params.min_similarity
            citable &= (close.astype(np.float64) @ onehot) > 0  # a repeat has one vector
        # Only shares of at least min_share can be cited: a handful per row. Strongest
        # first, ties by first appearance in the history.
        ranked: list[list[tuple[float, int]]] = [[] for _ in range(n)]
        js, codes = np.nonzero(citable)
        for j, code, share in zip(
            js.tolist(), codes.tolist(), shares[js, codes].tolist(), strict=True
        ):
            ranked[j].append((-share, code))
        out: list[list[dict[str, Any]]] = []
        for row in ranked:
            cited: list[dict[str, Any]] = []
            for negative, code in sorted(row):
                if len(cited) == params.max_cited:
                    break
                item_id = self._ids[code]
                title = self._titles[item_id]
                if title is None:
                    continue
                cited.append(
                    {
                        "item_id": item_id,
                        "title": title,
                        "event": self._last_event[item_id],
                        "share": round(-negative, 3),
                    }
                )
            out.append(cited)
        return out


class SessionPartners:
    """The items of a user's session that a candidate was bought or viewed together with.

    Args:
        history: the user's recent interactions, oldest first.
        lookup: catalog entry by item id (None when unknown; such items are never cited).
        stats: the batch's item statistics (None: no co-occurrence reasons).
        params: ``session_window`` and ``min_together_count``.

    Example:
        >>> stats = ItemStats(bought_together={"x": {"y": 4}})
        >>> partners = SessionPartners([Interaction("x", "purchase", 1)],
        ...                            {"x": Item("x", "Tent", "camp")}.get, stats)
        >>> partners.bought("y")
        {'bought_with': {'item_id': 'x', 'title': 'Tent', 'event': 'purchase'}, 'count': 4}
    """

    def __init__(
        self,
        history: Sequence[Interaction],
        lookup: Callable[[str], Item | None],
        stats: ItemStats | None,
        params: ReasonParams | None = None,
    ) -> None:
        self._params = params or ReasonParams()
        self._stats = stats
        self._session: list[str] = []
        self._last_event: dict[str, str] = {}
        self._titles: dict[str, str] = {}
        if stats is None or not (stats.bought_together or stats.viewed_together):
            return
        for interaction in history:
            self._last_event[interaction.item_id] = interaction.type
        for item_id in session_items(history, self._params.session_window):
            item = lookup(item_id)
            if item is not None and item.title.strip():
                self._session.append(item_id)
                self._titles[item_id] = item.title

    def bought(self, candidate: str) -> dict[str, Any] | None:
        """``bought_together`` evidence for ``candidate``, or None."""
        return self._evidence(candidate, "bought_with")

    def viewed(self, candidate: str) -> dict[str, Any] | None:
        """``viewed_together`` evidence for ``candidate``, or None."""
        return self._evidence(candidate, "viewed_with")

    def _evidence(self, candidate: str, key: str) -> dict[str, Any] | None:
        if self._stats is None or not self._session:
            return None
        table = self._stats.bought_together if key == "bought_with" else self._stats.viewed_together
        found = best_partner(candidate, self._session, table, self._params.min_together_count)
        if found is None:
            return None
        item_id, count = found
        partner = {
            "item_id": item_id,
            "title": self._titles[item_id],
            "event": self._last_event[item_id],
        }
        return {key: partner, "count": count}


def trend_evidence(trend: TrendingItem, half_life_s: float) -> dict[str, Any]:
    """``trending`` evidence: the rounded decayed count, the rank and the half-life.

    Example:
        >>> trend_evidence(TrendingItem("i", 12.4, 3), 5400.0)
        {'count': 12, 'rank': 3, 'half_life': {'value': 90, 'unit': 'minute'}}
    """
    return {"count": round(trend.count), "rank": trend.rank, "half_life": _duration(half_life_s)}


def _duration(seconds: float) -> dict[str, Any]:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and float(seconds / size).is_integer():
            return {"value": int(seconds // size), "unit": unit}
    value = int(seconds) if float(seconds).is_integer() else round(seconds, 1)
    return {"value": value, "unit": "second"}


def category_counts(history_items: Iterable[Item | None]) -> Counter[str]:
    """How many of the user's recent items fall in each category (pass each item once:
    the sentences say "3 of your last 5 items")."""
    return Counter(item.category for item in history_items if item is not None and item.category)


def tag_counts(history_items: Iterable[Item | None]) -> Counter[str]:
    """How many of the user's recent items carry each tag (a tag once per item; pass each
    item once).

    Example:
        >>> tag_counts([Item("a", "A", "c", ("x", "y")), Item("b", "B", "c", ("x",))])
        Counter({'x': 2, 'y': 1})
    """
    return Counter(
        itertools.chain.from_iterable(
            _distinct_tags(tuple(item.tags)) for item in history_items if item is not None
        )
    )


@functools.lru_cache(maxsize=1 << 16)
def _distinct_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """An item's tags once each, empty ones dropped (memoised: the same items recur)."""
    return tuple({tag for tag in tags if tag})


def build_reason(
    item: Item,
    *,
    cited: list[dict[str, Any]],
    categories: Counter[str],
    history_length: int,
    cold_start_item: bool,
    popularity: int,
    params: ReasonParams,
    tags: Counter[str] | None = None,
    bought_with: Evidence | None = None,
    viewed_with: Evidence | None = None,
    trend: Evidence | None = None,
) -> Reason:
    """Choose the strongest truthful reason for one recommended item.

    Order: no history -> ``trending`` if the item trends, else ``popular``; a
    content-indexed item -> ``new_arrival``; cited history items -> ``similar_to_recent``
    (with the best habit under ``also``); bought together with a session item ->
    ``bought_together``; a tag habit that beats the category habit -> ``tag_affinity``; a
    category habit -> ``category_affinity``; viewed together with a session item ->
    ``viewed_together``; a trending item -> ``trending``; otherwise ``popular``.

    Args:
        item: the recommended item.
        cited: the history items behind its score (:meth:`CitableHistory.cite`).
        categories: category counts of the user's recent items (:func:`category_counts`).
        history_length: number of distinct recent items the counts are taken over.
        cold_start_item: whether the item's vector comes from its content.
        popularity: the item's interaction count in the training log.
        params: thresholds.
        tags: tag counts of the user's recent items (:func:`tag_counts`); None disables
            tag reasons.
        bought_with: ``bought_together`` evidence (:meth:`SessionPartners.bought`).
        viewed_with: ``viewed_together`` evidence (:meth:`SessionPartners.viewed`).
        trend: ``trending`` evidence (:func:`trend_evidence`) when the item trends.

    Returns:
        The reason with its evidence and canonical English sentence.

    Example:
        >>> shoe = Item("s", "Trail Runner 3", "running")
        >>> build_reason(shoe, cited=[], categories=Counter(running=3), history_length=5,
        ...              cold_start_item=False, popularity=9, params=ReasonParams()).text
        'Because 3 of your last 5 items were in running'
    """
    evidence: dict[str, Any]
    if history_length == 0:
        if trend is not None:
            return _reason("trending", dict(trend))
        return _reason("popular", {"interactions": popularity, "user_history": 0})
    if cold_start_item:
        return _reason("new_arrival", {"category": item.category, "similar_items": cited})
    habit = _habit(item, categories, tags or Counter(), history_length, params)
    if cited:
        evidence = {"items": cited}
        if habit is not None:
            evidence["also"] = habit
        return _reason("similar_to_recent", evidence)
    if bought_with is not None:
        return _reason("bought_together", dict(bought_with))
    if habit is not None:
        code = habit["code"]
        return _reason(code, {k: v for k, v in habit.items() if k != "code"})
    if viewed_with is not None:
        return _reason("viewed_together", dict(viewed_with))
    if trend is not None:
        return _reason("trending", dict(trend))
    return _reason("popular", {"interactions": popularity, "user_history": history_length})


def _habit(
    item: Item,
    categories: Mapping[str, int],
    tags: Mapping[str, int],
    history_length: int,
    params: ReasonParams,
) -> dict[str, Any] | None:
    """The stronger of the item's category habit and best tag habit, if one holds."""
    category_count = categories.get(item.category, 0) if item.category else 0
    best_tag, tag_count = "", 0
    for tag in item.tags:  # a repeated tag cannot beat itself
        if tag and tags.get(tag, 0) > tag_count:
            best_tag, tag_count = tag, tags[tag]
    if tag_count >= params.min_tag_count and tag_count > category_count:
        return {
            "code": "tag_affinity",
            "tag": best_tag,
            "count": tag_count,
            "of_recent": history_length,
        }
    if category_count >= params.min_category_count:
        return {
            "code": "category_affinity",
            "category": item.category,
            "count": category_count,
            "of_recent": history_length,
        }
    return None


def _reason(code: str, evidence: dict[str, Any]) -> Reason:
    return Reason(code, evidence)
