"""The item catalog as the engine sees it: metadata by id, availability, popularity."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamrec.engine.types import Item

if TYPE_CHECKING:
    import pandas as pd


#: What titles are compared without: case, punctuation, spacing. Letters of every script
#: and digits stay, so Chinese titles are told apart.
_TITLE_NOISE = re.compile(r"[\W_]+")
#: Share of title words two items must have in common (Jaccard) to be the same product.
SAME_PRODUCT_TITLE_OVERLAP = 0.5


@functools.lru_cache(maxsize=1 << 16)
def title_key(title: str) -> str:
    """The title as lists compare it: case, punctuation and spacing dropped; memoised,
    as the same titles come up for every user.

    Example:
        >>> title_key("Trail Runner 3 - RED"), title_key("跑鞋 Pro")
        ('trail runner 3 red', '跑鞋 pro')
    """
    return _TITLE_NOISE.sub(" ", title.casefold()).strip()


@functools.lru_cache(maxsize=1 << 16)
def _words(title: str) -> frozenset[str]:
    """The distinct words of a title as lists compare it (memoised like :func:`title_key`)."""
    return frozenset(title_key(title).split())


def same_product(a: Item, b: Item) -> bool:
    """Whether two listings look like one product to a shopper: the same non-empty
    category and titles sharing at least :data:`SAME_PRODUCT_TITLE_OVERLAP` of their words.

    This is the metadata identity the near-duplicate rule needs on top of close vectors:
    on sparse logs many unrelated items have nearly identical vectors, and items without
    text (titles that are ids) are never duplicates of each other.

    Example:
        >>> red = Item("r", "Trail Runner 3 Red", "running")
        >>> same_product(red, Item("b", "Trail Runner 3 Blue", "running"))
        True
        >>> same_product(red, Item("j", "Ridge Jacket", "running"))
        False
    """
    if not a.category or a.category != b.category:
        return False
    words_a, words_b = product_words(a), product_words(b)
    return words_a is not None and words_b is not None and same_words(words_a, words_b)


def product_words(item: Item) -> frozenset[str] | None:
    """The title words :func:`same_product` compares, or None when the item can be no
    other's product: no category, no title, or a title that is only its id."""
    return _product_words(item.item_id, item.title, item.category)


@functools.lru_cache(maxsize=1 << 16)
def _product_words(item_id: str, title: str, category: str) -> frozenset[str] | None:
    words = _words(title)
    if not category or not words or words == _words(item_id):
        return None
    return words


def same_words(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two titles' words overlap enough (Jaccard >= :data:`SAME_PRODUCT_TITLE_OVERLAP`)
    for the items to be one product (in one category)."""
    return len(a & b) >= SAME_PRODUCT_TITLE_OVERLAP * len(a | b)


@dataclass(frozen=True)
class CatalogChange:
    """What an item message did: "added", "updated", "unavailable" or "unchanged"."""

    item_id: str
    action: str


class Catalog:
    """Mutable item metadata keyed by item id (single-writer: the worker's event loop)."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: dict[str, Item] = {}
        for item in items:
            self._items[item.item_id] = item

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items.values())

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def is_available(self, item_id: str) -> bool:
        item = self._items.get(item_id)
        return item is not None and item.available

    def put(self, item: Item) -> CatalogChange:
        """Insert or replace an item and say what changed."""
        old = self._items.get(item.item_id)
        self._items[item.item_id] = item
        if old == item:
            return CatalogChange(item.item_id, "unchanged")
        if not item.available:
            return CatalogChange(item.item_id, "unavailable")
        return CatalogChange(item.item_id, "added" if old is None else "updated")


def catalog_items(catalog: pd.DataFrame) -> list[Item]:
    """Catalog rows (streamrec.engine.offline.datasets schema) as items."""
    items = []
    for row in catalog.to_dict("records"):
        price = row.get("price")
        description = row.get("description")
        tags = row.get("tags")
        if isinstance(tags, str):
            tags = json.loads(tags) if tags.startswith("[") else [t for t in tags.split("|") if t]
        items.append(
            Item(
                item_id=str(row["item_id"]),
                title=str(row["title"]),
                category=str(row.get("category") or ""),
                tags=tuple(str(t) for t in (tags if tags is not None else ())),
                price=None
                if price is None or (isinstance(price, float) and math.isnan(price))
                else float(price),
                description=None
                if not isinstance(description, str) or not description
                else description,
                available=bool(row.get("available", True)),
            )
        )
    return items
