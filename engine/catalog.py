"""The item catalog as the engine sees it: metadata by id, availability, popularity."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.types import Item


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
