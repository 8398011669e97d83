"""A burst far above what one worker sustains: memory stays flat, the backlog shows as
consumer lag, and every event is still answered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from tests import shop
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration

BURST = 5000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lag(worker) -> float:
    total = 0.0
    for line in worker.metrics().splitlines():
        if line.startswith("streamrec_consumer_lag{"):
            total += float(line.split()[-1])
    return total


def test_a_burst_is_absorbed_as_lag_with_bounded_memory_and_nothing_dropped(settings, start_worker):
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, "burst")
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    produce(settings, settings.topic_events, [event("warm", "warm-user", "books-1")])
    Collector(settings, settings.topic_recommendations).by_trigger("warm", timeout=60)
    baseline = _rss_mb(worker.proc.pid)

    ids = [f"b{n}" for n in range(BURST)]
    messages = [
        event(i, f"burst-user-{n % 500}", f"books-{n % shop.PER_DEPARTMENT}")
        for n, i in enumerate(ids)
    ]
    started = time.monotonic()
    produce(settings, settings.topic_events, messages)
    produced_s = time.monotonic() - started

    peak_rss, peak_lag = baseline, 0.0
    answered = worker.metric("streamrec_recommendations_published_total")
    deadline = time.monotonic() + 240
    while answered < BURST + 1:
        assert time.monotonic() < deadline, worker.log()
        peak_rss = max(peak_rss, _rss_mb(worker.proc.pid))
        peak_lag = max(peak_lag, _lag(worker))
        time.sleep(0.2)
        answered = worker.metric("streamrec_recommendations_published_total")
    drained_s = time.monotonic() - started

    got = Collector(settings, settings.topic_recommendations).by_trigger(*ids, timeout=120)
    assert len(got) == BURST  # nothing dropped
    assert peak_lag >= BURST / 10, "the backlog shows as consumer lag while it lasts"
    time.sleep(6)  # the lag timer refreshes every 5 s
    assert _lag(worker) == 0
    assert peak_rss - baseline < 150, f"RSS grew {peak_rss - baseline:.0f} MB during the burst"
    print(  # noqa: T201 - reported in the test log
        f"\nburst: {BURST} events produced in {produced_s:.1f}s "
        f"({BURST / produced_s:.0f}/s), drained in {drained_s:.1f}s ({BURST / drained_s:.0f}/s); "
        f"peak lag {peak_lag:.0f}; RSS {baseline:.0f} -> peak {peak_rss:.0f} MB"
    )
