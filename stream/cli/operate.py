"""The operator's one-shot commands: topics, replay, watch, explain, forget and the
experiment report. Each reaches Kafka or Redis once and says plainly what it did."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from streamrec.stream.cli.common import load_settings
from streamrec.stream.settings import Settings

if TYPE_CHECKING:
    from streamrec.stream.redis_store import RedisStore

T = TypeVar("T")


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from streamrec.stream.cli.experiment_report import plot_report, read_report
    from streamrec.stream.worker.experiment_config import load_running_experiment

    settings = load_settings()
    experiment = load_running_experiment(settings)
    if experiment is None or experiment.name != args.name:
        running = "none" if experiment is None else repr(experiment.name)
        msg = (
            f"streamrec: experiment {args.name!r} is not in STREAMREC_EXPERIMENTS_FILE "
            f"(running: {running})"
        )
        raise SystemExit(msg)
    report = asyncio.run(_with_store(settings, lambda store: read_report(store, experiment)))
    for line in report.lines():
        print(line)  # noqa: T201
    if args.chart is not None:
        plot_report(report, args.chart)
        print(f"chart: {args.chart}")  # noqa: T201
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streamrec.stream.kafka_io import KafkaUnavailableError, TopicCreationError, ensure_topics

    try:
        created = asyncio.run(ensure_topics(load_settings()))
    except (KafkaUnavailableError, TopicCreationError) as exc:
        msg = f"streamrec: {exc}"
        raise SystemExit(msg) from None
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))  # noqa: T201
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import pandas as pd
    from rich.progress import Progress

    from streamrec.engine.offline import datasets
    from streamrec.engine.serving.catalog import catalog_items
    from streamrec.stream.cli.data_files import load_data_files
    from streamrec.stream.cli.replay import publish_catalog, publish_events, wait_for_catalog

    settings = load_settings()
    events: pd.DataFrame | None
    catalog: pd.DataFrame | None
    if args.dataset == "ml-100k":
        data = datasets.load_movielens_100k()
        events, catalog = data.events, data.catalog
    else:
        events, catalog = load_data_files(args.command, args.events, args.catalog)
    if catalog is not None and not args.events_only:
        items = catalog_items(catalog)
        n = asyncio.run(publish_catalog(settings, items))
        print(f"published {n:,} items to {settings.topic_items}")  # noqa: T201
        if events is not None and not args.catalog_only:
            # Events on items the worker has not taken in yet would be dead-lettered.
            asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    if events is not None and not args.catalog_only:
        if args.limit:
            events = events.iloc[-args.limit :] if args.tail else events.iloc[: args.limit]
        with Progress() as bar:
            task = bar.add_task("events", total=len(events))
            n = asyncio.run(
                publish_events(
                    settings,
                    events,
                    rate=args.rate,
                    live_ts=not args.keep_ts,
                    progress=lambda k: bar.advance(task, k),
                )
            )
        print(f"published {n:,} events to {settings.topic_events}")  # noqa: T201
    return 0


class PseudonymMismatchError(RuntimeError):
    """This command's STREAMREC_USER_ID_HMAC_KEY is not the workers': it would miss
    every user."""


async def _with_store(
    settings: Settings, use: Callable[[RedisStore], Awaitable[T]], *, users: bool = False
) -> T:
    """Run ``use`` with a Redis store built from the settings, closing it afterwards.

    A one-shot command does not wait for Redis as the worker does: an unreachable server
    raises the connection error at once (``main`` names the setting). With ``users``, a
    command keyed differently from the workers stops (:class:`PseudonymMismatchError`):
    a forget would have deleted nothing and said it was done.
    """
    from streamrec.stream.redis_store import RedisStore

    store = RedisStore.from_settings(settings)
    try:
        await store.ping()
        if users:
            problem = await store.pseudonym_mismatch()
            if problem is not None:
                raise PseudonymMismatchError(problem)
        return await use(store)
    finally:
        await store.close()


def cmd_watch(args: argparse.Namespace) -> int:
    from streamrec.stream.cli.watch import watch

    settings = load_settings()

    async def run() -> int:
        items, _ = await _with_store(settings, lambda store: store.catalog_snapshot())
        return await watch(settings, {i.item_id: i.title for i in items}, stop_after=args.count)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    settings = load_settings()
    raw = asyncio.run(
        _with_store(settings, lambda store: store.latest_recommendation(args.user_id), users=True)
    )
    if raw is None:
        print(f"no recommendations stored for user {args.user_id}")  # noqa: T201
        return 1
    rec = json.loads(raw)
    items = [i for i in rec["items"] if args.item_id is None or i["item_id"] == args.item_id]
    if not items:
        print(f"item {args.item_id} is not in the latest list of user {args.user_id}")  # noqa: T201
        return 1
    rec["items"] = items
    print(json.dumps(rec, indent=2, ensure_ascii=False))  # noqa: T201
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = time.time_ns() // 1_000_000
    keys = asyncio.run(
        _with_store(settings, lambda store: store.forget(args.user_id, now), users=True)
    )
    print(  # noqa: T201
        f"forgot user {args.user_id}: {keys} key(s) deleted (history, purchases, seen items, "
        "dedupe markers, stored list and vector); their events stamped until now are ignored "
        f"for {settings.dedupe_ttl_s} s"
    )
    return 0
