"""Real Prometheus (Debian's binary, deploy/local/setup.sh installs it) scrapes a running
worker with the config from deploy/prometheus, and answers the dashboard's queries."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from tests import shop
from tests.conftest import free_port
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamrec.json"


def _query(base: str, expr: str) -> list[dict]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


def _wait_for_count(base: str, proc: subprocess.Popen, tmp_path: Path, count: int) -> None:
    """Until Prometheus has scraped ``count`` published lists."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            found = _query(base, "sum(streamrec_recommendations_published_total)")
        except httpx.HTTPError:
            found = []
        if found and float(found[0]["value"][1]) >= count:
            return
        assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
        time.sleep(1)


def test_prometheus_scrapes_the_worker_and_answers_every_dashboard_query(
    settings, start_worker, tmp_path
):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run deploy/local/setup.sh"
    asyncio.run(ensure_topics(settings))
    start_worker(settings)
    # The shipped config, with its one worker target pointed at this worker and faster.
    text = CONFIG.read_text()
    assert text.count("worker:9108") == 1
    text = text.replace("worker:9108", f"127.0.0.1:{settings.metrics_port}")
    text = text.replace("scrape_interval: 5s", "scrape_interval: 1s")
    text = text.replace("scrape_timeout: 4s", "scrape_timeout: 1s")
    (tmp_path / "prometheus.yml").write_text(text)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        items = catalog_items(shop.catalog())
        produce(
            settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items]
        )
        asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
        # Two waves, so that Prometheus sees the counters grow between scrapes.
        for wave in range(2):
            ids = [f"prom-{wave}-{n}" for n in range(30)]
            messages = [event(i, f"user-{n % 7}", f"books-{n % 9}") for n, i in enumerate(ids)]
            produce(settings, settings.topic_events, messages)
            Collector(settings, settings.topic_recommendations).by_trigger(*ids, timeout=90)
            _wait_for_count(base, proc, tmp_path, 30 * (wave + 1))
        targets = httpx.get(f"{base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        jobs = {t["labels"]["job"]: t for t in targets}
        assert jobs["streamrec-worker"]["health"] == "up"
        # The reason writer's job is in the config too; no writer runs here, so it is down.
        assert set(jobs) == {"streamrec-worker", "streamrec-reason-writer"}
        time.sleep(3)  # a few more scrapes, for rate() windows
        # Throughput and latency, as the dashboard asks for them.
        assert _query(base, "sum(rate(streamrec_events_consumed_total[1m]))")
        buckets = "rate(streamrec_event_to_publish_seconds_bucket[1m])"
        [p99] = _query(base, f"histogram_quantile(0.99, sum by (le) ({buckets}))")
        assert float(p99["value"][1]) > 0
        # Every panel's query is valid PromQL over what the worker exports.
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target_query in panel.get("targets", []):
                _query(base, target_query["expr"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
