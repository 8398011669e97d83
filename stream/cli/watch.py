"""A live terminal view of the recommendations topic (used by ``streamrec watch``/demo)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamrec.stream.kafka_io import consumer
from streamrec.stream.settings import Settings


def render(
    recent: deque[dict[str, Any]],
    titles: Mapping[str, str],
    received: int,
    rate: float,
    status: str,
    show: int,
) -> Group:
    table = Table(expand=True, show_lines=True, title="latest recommendations")
    table.add_column("user", no_wrap=True, width=8)
    table.add_column("after event", width=14, overflow="fold")
    table.add_column("top items and why", ratio=1)
    for rec in list(recent)[::-1]:
        lines = Text()
        for item in rec["items"][:show]:
            title = titles.get(item["item_id"], item["item_id"])
            lines.append(f"{item['rank']}. {title}", style="bold")
            lines.append(f"  {item['reason']}", style="green")
            lines.append(f"  [{item['reason_code']}]\n", style="dim")
        table.add_row(rec["user_id"], rec["trigger_event_id"], lines)
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
) -> int:
    """Print recommendations as they are published; returns how many were received."""
    console = console or Console()
    recent: deque[dict[str, Any]] = deque(maxlen=rows)
    received = 0
    started = time.perf_counter()
    async with consumer(settings, [settings.topic_recommendations]) as cons:
        with Live(
            render(recent, titles, 0, 0.0, status(), show), console=console, refresh_per_second=4
        ) as live:
            while stop_after is None or received < stop_after:
                batch = await cons.getmany(timeout_ms=250, max_records=500)
                for records in batch.values():
                    for record in records:
                        recent.append(json.loads(record.value))
                        received += 1
                rate = received / max(time.perf_counter() - started, 1e-6)
                live.update(render(recent, titles, received, rate, status(), show))
                await asyncio.sleep(0)
    return received
