"""The transport floor of benchmarks/floor.py stays the worker's Faust app minus the work:
the same Faust settings and transport, and a list shaped like ours."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamrec.stream.contracts import recommendation_from_json
from streamrec.stream.settings import Settings
from streamrec.stream.worker.app import create_app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import tree_cpu  # noqa: E402
from benchmarks.floor import FloorList, create_floor_app  # noqa: E402

#: The Faust settings that decide what a worker costs per event.
SAME = (
    "broker",
    "store",
    "topic_partitions",
    "topic_disable_leader",
    "consumer_auto_offset_reset",
    "producer_acks",
    "producer_compression_type",
    "broker_commit_every",
    "broker_commit_interval",
    "broker_session_timeout",
    "broker_heartbeat_interval",
    "stream_buffer_maxsize",
    "web_enabled",
)


def _settings(**update: Any) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", metrics_port=0, **update)


@pytest.mark.parametrize("batch_size", [1, 64, 500])
def test_the_floor_app_is_configured_like_the_worker(batch_size: int):
    settings = _settings(batch_size=batch_size)
    ours = create_app(settings, pipeline=object())  # type: ignore[arg-type]
    floor = create_floor_app(settings)
    for name in SAME:
        assert getattr(floor.conf, name) == getattr(ours.conf, name), name
    assert type(floor.transport) is type(ours.transport)
    assert floor.transport.drain_s == ours.transport.drain_s


@pytest.mark.parametrize("target", [2500, 4400])
def test_the_floor_list_is_a_recommendation_for_the_event_of_about_the_size_asked(target: int):
    raw = FloorList(target)('user "7"', "ev-42", 1_700_000_000_000)
    rec = recommendation_from_json(raw)
    assert (rec.user_id, rec.trigger_event_id, rec.generated_at) == (
        'user "7"',
        "ev-42",
        1_700_000_000_000,
    )
    assert len(rec.items) == 10
    assert abs(len(raw) - target) < 100


def test_worker_cpu_counts_the_children():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        seen = 0.0
        while parent.poll() is None and time.monotonic() < deadline:
            seen = max(seen, tree_cpu(parent.pid))
            time.sleep(0.05)
        assert seen >= 0.3, "the busy child's CPU is counted while it runs"
    finally:
        parent.wait(30)
