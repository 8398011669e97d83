"""Produce a catalog and an interaction log to Kafka, as a shop's services would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from streamrec.engine.types import Event, Item
from streamrec.stream.contracts import encode_event, encode_item
from streamrec.stream.kafka_io import producer, send_all
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings

Progress = Callable[[int], None]


def clock() -> int:
    """Wall-clock epoch milliseconds (event timestamps are wall-clock by contract)."""
    return time.time_ns() // 1_000_000


def replay_events(
    events: pd.DataFrame, *, live_ts: bool, clock: Callable[[], int]
) -> Iterator[Event]:
    """Rows (event schema) as events; with ``live_ts`` the ts is now and the logged ts
    goes to ``context.logged_ts``, so latency is measured from production time."""
    for row in events.to_dict("records"):
        context: dict[str, Any] | None = None
        ts = int(row["ts"])
        if live_ts:
            context = {"logged_ts": ts}
            ts = clock()
        yield Event(
            str(row["event_id"]), str(row["user_id"]), str(row["item_id"]), row["type"], ts, context
        )


async def publish_catalog(settings: Settings, items: list[Item]) -> int:
    async with producer(settings, linger_ms=5) as prod:
        return await send_all(
            prod, settings.topic_items, ((i.item_id.encode(), encode_item(i)) for i in items)
        )


async def publish_events(
    settings: Settings,
    events: pd.DataFrame,
    *,
    rate: float | None,
    live_ts: bool = True,
    progress: Progress | None = None,
) -> int:
    """Send events in log order, at ``rate`` events/s (None: as fast as possible)."""
    sent = 0
    started = time.perf_counter()
    async with producer(settings, linger_ms=2) as prod:
        pending = []
        for event in replay_events(events, live_ts=live_ts, clock=clock):
            if rate:
                due = started + sent / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                    event = Event(
                        event.event_id,
                        event.user_id,
                        event.item_id,
                        event.type,
                        clock() if live_ts else event.ts,
                        event.context,
                    )
            pending.append(
                await prod.send(
                    settings.topic_events, encode_event(event), key=event.user_id.encode()
                )
            )
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress is not None:
                progress(1)
        await asyncio.gather(*pending)
    return sent


async def wait_for_catalog(
    settings: Settings, item_ids: set[str], timeout_s: float = 120.0
) -> None:
    """Wait until a worker has taken every item in ``item_ids`` into the shared catalog.

    Events on items the catalog does not know go to the DLQ, so replays wait for this.

    Raises:
        TimeoutError: the items did not all arrive in time (is a worker running?).
    """
    store = RedisStore.from_settings(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            missing = await store.missing_items(sorted(item_ids))
            if missing == 0:
                return
            if time.monotonic() > deadline:
                msg = (
                    f"{missing} of {len(item_ids)} catalog items not taken in after "
                    f"{timeout_s:.0f}s; is a worker consuming the items topic?"
                )
                raise TimeoutError(msg)
            await asyncio.sleep(0.25)
    finally:
        await store.close()
