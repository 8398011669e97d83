"""Reasons: the evidence behind each recommended item, and the sentence shown for it.

Evidence is computed from the same numbers that ranked the item (per-history-item
contributions to the score, category counts of the user's history, popularity counts).
Text is rendered from the evidence alone, so a sentence can only name titles, categories
and counts that the evidence carries.

Reason codes:
    similar_to_recent   the item is close to specific recent items of the user
    category_affinity   the item is in a category the user interacted with repeatedly
    new_arrival         a cold-start item (indexed from its content) matching the user
    popular             fallback for users without history, said as such
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.types import Interaction, Item

VERBS = {
    "view": "viewed",
    "click": "clicked on",
    "add_to_cart": "added to your cart",
    "purchase": "bought",
}


@dataclass(frozen=True)
class ReasonParams:
    """How much of the score an item must explain to be cited, and how many to cite."""

    min_share: float = 0.2
    max_cited: int = 2
    min_category_count: int = 2


@dataclass(frozen=True)
class Reason:
    code: str
    evidence: Mapping[str, Any]
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


def build_reason(
    item: Item,
    *,
    cited: list[dict[str, Any]],
    categories: Counter[str],
    history_length: int,
    cold_start_item: bool,
    popularity: int,
    params: ReasonParams,
) -> Reason:
    """Choose the strongest truthful reason for one recommended item."""
    if history_length == 0:
        evidence: dict[str, Any] = {"interactions": popularity, "user_history": 0}
        return Reason("popular", evidence, render("popular", evidence))
    if cold_start_item:
        evidence = {"category": item.category, "similar_items": cited}
        return Reason("new_arrival", evidence, render("new_arrival", evidence))
    if cited:
        evidence = {"items": cited}
        return Reason("similar_to_recent", evidence, render("similar_to_recent", evidence))
    count = categories.get(item.category, 0)
    if count >= params.min_category_count:
        evidence = {"category": item.category, "count": count, "of_recent": history_length}
        return Reason("category_affinity", evidence, render("category_affinity", evidence))
    evidence = {"interactions": popularity, "user_history": history_length}
    return Reason("popular", evidence, render("popular", evidence))


def render(code: str, evidence: Mapping[str, Any]) -> str:
    """English text for a reason, built only from ``evidence``."""
    if code == "similar_to_recent":
        return "Because you " + _cite(evidence["items"])
    if code == "new_arrival":
        base = f"New in {evidence['category']}" if evidence.get("category") else "New arrival"
        if evidence["similar_items"]:
            return f"{base}, close to what you {_cite(evidence['similar_items'])}"
        return base
    if code == "category_affinity":
        return (
            f"Because {evidence['count']} of your last {evidence['of_recent']} items "
            f"were in {evidence['category']}"
        )
    if code == "popular":
        n = evidence["interactions"]
        if evidence["user_history"] == 0:
            return f"Popular with other users ({n} interactions) while we learn your taste"
        return f"Popular with other users ({n} interactions)"
    msg = f"unknown reason code {code!r}"
    raise ValueError(msg)


def _cite(entries: Sequence[Mapping[str, Any]]) -> str:
    """'viewed A and B' / 'viewed A and bought B'."""
    groups: dict[str, list[str]] = {}
    for entry in entries:
        groups.setdefault(VERBS[entry["event"]], []).append(entry["title"])
    parts = [f"{verb} {' and '.join(titles)}" for verb, titles in groups.items()]
    return " and ".join(parts)
