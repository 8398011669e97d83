"""Evidence: which facts explain a recommended item, and which reason code they support.

Evidence is computed from the same numbers that ranked the item (per-history-item
contributions to the score, category and tag counts of the user's history, popularity
counts). Shapes, by code::

    similar_to_recent  {"items": [{item_id, title, event, share}, ...], "also"?: habit}
    category_affinity  {"category", "count", "of_recent"}
    tag_affinity       {"tag", "count", "of_recent"}
    new_arrival        {"category", "similar_items": [{item_id, title, event, share}, ...]}
    popular            {"interactions", "user_history"}

``also`` is an optional secondary signal: a category or tag habit that holds for the item
too, ``{"code": "category_affinity"|"tag_affinity", <its evidence fields>}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.reasons._types import Evidence
from engine.reasons.templates import render
from engine.types import Interaction, Item


@dataclass(frozen=True)
class ReasonParams:
    """How much of the score an item must explain to be cited, and how many to cite.

    Attributes:
        min_share: least share of the positive score contributions a cited item explains.
        max_cited: most history items cited per reason.
        min_category_count: least number of recent items in the candidate's category for
            a category reason.
        min_tag_count: least number of recent items sharing a tag with the candidate for
            a tag reason.
    """

    min_share: float = 0.2
    max_cited: int = 2
    min_category_count: int = 2
    min_tag_count: int = 2


@dataclass(frozen=True)
class Reason:
    """A reason code, the evidence behind it and its default (English) sentence."""

    code: str
    evidence: Evidence
    text: str


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
        self, contributions: npt.NDArray[np.floating[Any]], params: ReasonParams
    ) -> list[dict[str, Any]]:
        """The recent items that explain most of a candidate's score, strongest first.

        Args:
            contributions: each history entry's part of the candidate's score (h,); the
                parts of repeated items add up.
            params: citation thresholds.

        Returns:
            Up to ``params.max_cited`` entries {item_id, title, event, share} whose share of
            the positive contributions is at least ``params.min_share``; items without a
            catalog title are never cited.
        """
        positive = np.clip(np.asarray(contributions, dtype=np.float64), 0.0, None)
        total = float(positive.sum())
        if total <= 0.0:
            return []
        shares = np.bincount(self._codes, weights=positive, minlength=len(self._ids)) / total
        cited: list[dict[str, Any]] = []
        for code in np.argsort(-shares, kind="stable"):
            share = float(shares[code])
            if share < params.min_share or len(cited) == params.max_cited:
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
                    "share": round(share, 3),
                }
            )
        return cited


def category_counts(history_items: Sequence[Item | None]) -> Counter[str]:
    """How many of the user's recent interactions fall in each category."""
    return Counter(item.category for item in history_items if item is not None and item.category)


def tag_counts(history_items: Sequence[Item | None]) -> Counter[str]:
    """How many of the user's recent interactions carry each tag (once per interaction).

    Example:
        >>> tag_counts([Item("a", "A", "c", ("x", "y")), Item("b", "B", "c", ("x",))])
        Counter({'x': 2, 'y': 1})
    """
    counts: Counter[str] = Counter()
    for item in history_items:
        if item is not None:
            counts.update({tag for tag in item.tags if tag})
    return counts


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
) -> Reason:
    """Choose the strongest truthful reason for one recommended item.

    Order: no history -> ``popular``; a content-indexed item -> ``new_arrival``; cited
    history items -> ``similar_to_recent`` (with the best habit under ``also``); a tag
    habit that beats the category habit -> ``tag_affinity``; a category habit ->
    ``category_affinity``; otherwise ``popular``.

    Args:
        item: the recommended item.
        cited: the history items behind its score (:meth:`CitableHistory.cite`).
        categories: category counts of the user's recent items (:func:`category_counts`).
        history_length: number of recent items the counts are taken over.
        cold_start_item: whether the item's vector comes from its content.
        popularity: the item's interaction count in the training log.
        params: thresholds.
        tags: tag counts of the user's recent items (:func:`tag_counts`); None disables
            tag reasons.

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
        return _reason("popular", {"interactions": popularity, "user_history": 0})
    if cold_start_item:
        return _reason("new_arrival", {"category": item.category, "similar_items": cited})
    habit = _habit(item, categories, tags or Counter(), history_length, params)
    if cited:
        evidence = {"items": cited}
        if habit is not None:
            evidence["also"] = habit
        return _reason("similar_to_recent", evidence)
    if habit is not None:
        code = habit["code"]
        return _reason(code, {k: v for k, v in habit.items() if k != "code"})
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
    for tag in dict.fromkeys(item.tags):
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
    return Reason(code, evidence, render(code, evidence))
