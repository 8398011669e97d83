"""A live terminal view of the recommendations topic (used by ``streamrec watch``/demo).

Each published list is shown under the event that triggered it, as "u42 viewed Toy Story
(1995)", then its items with their reasons, so a viewer can check a reason against what
the user just did. A recommendation names its trigger only by ``trigger_event_id``; the
trigger's item and type come from the events themselves: the demo passes the events it
replays (``triggers``), ``streamrec watch`` also reads the events topic and keeps the
latest :data:`TRIGGER_MEMORY` events it saw (a list whose event was not seen, e.g. sent
before the watcher started, shows the event id instead).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamrec.stream.kafka_io import consumer
from streamrec.stream.settings import Settings

__all__ = [
    "EVENT_VERBS",
    "TRIGGER_MEMORY",
    "Trigger",
    "TriggerMemory",
    "item_line",
    "render",
    "trigger_line",
    "watch",
]

#: How each event type reads after the user id ("u42 viewed ...").
EVENT_VERBS: Mapping[str, str] = {
    "view": "viewed",
    "click": "clicked",
    "add_to_cart": "added to cart",
    "purchase": "bought",
}

#: Events ``streamrec watch`` remembers to name the triggers of the lists it shows.
TRIGGER_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class Trigger:
    """What the user did: the item and the event type of a list's triggering event."""

    item_id: str
    type: str


class TriggerMemory:
    """``event_id -> Trigger`` for the latest ``capacity`` events (oldest forgotten first)."""

    def __init__(self, capacity: int = TRIGGER_MEMORY) -> None:
        if capacity < 1:
            msg = f"capacity must be >= 1, got {capacity}"
            raise ValueError(msg)
        self._capacity = capacity
        self._events: OrderedDict[str, Trigger] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def get(self, event_id: str) -> Trigger | None:
        return self._events.get(event_id)

    def add(self, event_id: str, trigger: Trigger) -> None:
        self._events[event_id] = trigger
        self._events.move_to_end(event_id)
        while len(self._events) > self._capacity:
            self._events.popitem(last=False)

    def add_message(self, raw: bytes | None) -> None:
        """Remember one ``streamrec.events`` message; anything that is not one is skipped
        (the worker dead-letters it; the view just has no trigger for it)."""
        try:
            body = json.loads(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict):
            return
        event_id, item_id, kind = body.get("event_id"), body.get("item_id"), body.get("type")
        if isinstance(event_id, str) and isinstance(item_id, str) and isinstance(kind, str):
            self.add(event_id, Trigger(item_id, kind))


def trigger_line(
    user_id: str, event_id: str, trigger: Trigger | None, titles: Mapping[str, str]
) -> str:
    """The heading of one list: "u42 viewed Toy Story (1995)".

    An unknown trigger reads "u42 after event ml100k-7", an unknown title shows the item id.
    """
    if trigger is None:
        return f"{user_id} after event {event_id}"
    verb = EVENT_VERBS.get(trigger.type, trigger.type)
    return f"{user_id} {verb} {titles.get(trigger.item_id, trigger.item_id)}"


def item_line(item: Mapping[str, Any], titles: Mapping[str, str]) -> tuple[str, str, str]:
    """One recommended item as (``"1. Title"``, its reason, ``"[reason_code]"``)."""
    title = titles.get(item["item_id"], item["item_id"])
    return f"{item['rank']}. {title}", str(item["reason"]), f"[{item['reason_code']}]"


def render(
    recent: Sequence[dict[str, Any]],
    titles: Mapping[str, str],
    received: int,
    rate: float,
    status: str,
    show: int,
    triggers: Callable[[str], Trigger | None] = lambda _: None,
) -> Group:
    """The screen: a header line, then the latest lists (newest first), each under the
    event that triggered it."""
    table = Table(expand=True, show_lines=True, title="latest recommendations")
    table.add_column("after the user's event: top items and why", ratio=1)
    for rec in list(recent)[::-1]:
        event_id = rec["trigger_event_id"]
        lines = Text()
        lines.append(
            trigger_line(rec["user_id"], event_id, triggers(event_id), titles) + "\n",
            style="bold cyan",
        )
        for item in rec["items"][:show]:
            name, reason, code = item_line(item, titles)
            lines.append(f"  {name}", style="bold")
            lines.append(f"  {reason}", style="green")
            lines.append(f"  {code}\n", style="dim")
        lines.rstrip()
        table.add_row(lines)
    model = recent[-1]["model_version"] if recent else "-"
    header = Text(
        f"{received} lists received, {rate:.1f}/s  ·  model {model}"
        f"  ·  {status}  ·  Ctrl-C to stop",
        style="cyan",
    )
    return Group(header, table)


async def watch(
    settings: Settings,
    titles: Mapping[str, str],
    *,
    rows: int = 4,
    show: int = 3,
    stop_after: int | None = None,
    status: Callable[[], str] = lambda: "",
    console: Console | None = None,
    triggers: Mapping[str, Trigger] | None = None,
) -> int:
    """Print recommendations as they are published; returns how many were received.

    Args:
        settings: Where the topics are.
        titles: Item titles by item id.
        rows: Lists on screen.
        show: Items shown per list.
        stop_after: Return after this many lists (None: until cancelled).
        status: A status line, asked again at every refresh.
        console: Where to draw.
        triggers: The triggering events by event id when the caller knows them (the
            demo's replayed events); None reads them from the events topic.
    """
    console = console or Console()
    recent: deque[dict[str, Any]] = deque(maxlen=rows)
    memory = TriggerMemory()

    def lookup(event_id: str) -> Trigger | None:
        found = triggers.get(event_id) if triggers is not None else None
        return found if found is not None else memory.get(event_id)

    topics = [settings.topic_recommendations]
    if triggers is None:
        topics.append(settings.topic_events)
    received = 0
    started = time.perf_counter()
    async with consumer(settings, topics) as cons:
        with Live(
            render(recent, titles, 0, 0.0, status(), show, lookup),
            console=console,
            refresh_per_second=4,
        ) as live:
            while stop_after is None or received < stop_after:
                batch = await cons.getmany(timeout_ms=250, max_records=500)
                for tp, records in batch.items():
                    if tp.topic != settings.topic_recommendations:
                        for record in records:
                            memory.add_message(record.value)
                        continue
                    for record in records:
                        recent.append(json.loads(record.value))
                        received += 1
                rate = received / max(time.perf_counter() - started, 1e-6)
                live.update(render(recent, titles, received, rate, status(), show, lookup))
                await asyncio.sleep(0)
    return received
