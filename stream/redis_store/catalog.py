"""The shared item catalog: a hash of item JSON and a change log to follow."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streamrec.engine.types import Item
from streamrec.stream.contracts import decode_item, encode_item
from streamrec.stream.redis_store.connection import RedisConnection

log = logging.getLogger(__name__)

#: How an operator publishes a catalog; named wherever an empty catalog is reported.
PUBLISH_CATALOG_COMMAND = "streamrec replay --catalog PATH --catalog-only"


class CatalogStore(RedisConnection):
    """The catalog every worker reads at start and follows."""

    async def put_items(self, items: Sequence[Item]) -> None:
        async def run() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                for item in items:
                    pipe.hset(self.keys.catalog, item.item_id, encode_item(item))
                    pipe.xadd(self.keys.catalog_log, {"item_id": item.item_id}, maxlen=1_000_000)
                await pipe.execute()

        if items:
            await self.retrying("catalog_put", run)

    async def add_missing_items(self, items: Sequence[Item], chunk: int = 1000) -> int:
        """Store the items the catalog lacks and leave those it holds (another worker may
        have stored a newer version); returns how many were added. ``items`` holds one
        version per item id. A worker restoring the catalog at start uses this, so one
        that joins a Redis holding the catalog writes nothing and no change-log entry."""
        added = 0
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]

            async def run(part: Sequence[Item] = part) -> int:
                held = await self.client.hmget(self.keys.catalog, [item.item_id for item in part])
                missing = [item for item, value in zip(part, held, strict=True) if value is None]
                if missing:
                    async with self.client.pipeline(transaction=True) as pipe:
                        for item in missing:  # HSETNX: one stored meanwhile is kept
                            pipe.hsetnx(self.keys.catalog, item.item_id, encode_item(item))
                            pipe.xadd(
                                self.keys.catalog_log, {"item_id": item.item_id}, maxlen=1_000_000
                            )
                        replies = await pipe.execute()
                    return sum(1 for stored in replies[::2] if stored)
                return 0

            added += await self.retrying("catalog_add_missing", run)
        return added

    async def missing_items(self, item_ids: Sequence[str]) -> int:
        """How many of ``item_ids`` the shared catalog does not hold (not retried: a
        caller waiting for the catalog keeps its own deadline)."""
        if not item_ids:
            return 0
        held = await self.client.hmget(self.keys.catalog, list(item_ids))
        return sum(value is None for value in held)

    async def catalog_size(self) -> int:
        """How many items the shared catalog holds (0: none published yet)."""
        return int(await self.retrying("catalog_size", lambda: self.client.hlen(self.keys.catalog)))

    async def catalog_snapshot(self) -> tuple[list[Item], str]:
        """Every item plus the change-log position to follow from (``0-0`` if empty)."""

        async def run() -> tuple[list[Item], str]:
            last = await self.client.xrevrange(self.keys.catalog_log, count=1)
            position = last[0][0].decode() if last else "0-0"
            raw = await self.client.hvals(self.keys.catalog)
            return [decode_item(bytes(v), max_bytes=1 << 20) for v in raw], position

        return await self.retrying("catalog_snapshot", run)

    async def catalog_changes(self, position: str, count: int = 5000) -> tuple[list[Item], str]:
        """Items changed after ``position`` (latest version of each) and the new position."""

        async def run() -> tuple[list[Item], str]:
            entries = await self.client.xrange(
                self.keys.catalog_log, min=f"({position}", count=count
            )
            if not entries:
                return [], position
            ids = list(dict.fromkeys(fields[b"item_id"].decode() for _, fields in entries))
            raw = await self.client.hmget(self.keys.catalog, ids)
            items = [decode_item(bytes(v), max_bytes=1 << 20) for v in raw if v is not None]
            return items, entries[-1][0].decode()

        return await self.retrying("catalog_changes", run)
