"""Nothing lost, nothing doubled: a worker killed with SIGKILL mid-stream, a worker of a
group of two killed mid-stream, a Kafka broker restart and Redis frozen for a while
mid-stream leave every event applied exactly once.

The check is the same for both: each user's history in Redis is exactly the stream that
was produced for them (no gap, no repeat, in order), and every produced event has a
recommendation (valid events) or a dead-letter record (malformed ones). Published lists
may repeat after a crash (at-least-once output); user state never does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.local_infra import start_kafka, start_redis
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.redis_store import user_key
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import WorkerProcess, free_port
from tests.integration.kafka_helpers import Collector, event, produce
from tests.redis_cluster import sync_client

pytestmark = pytest.mark.integration

USERS = 30
PER_USER = 16


def _stream() -> tuple[list[tuple[bytes, bytes]], dict[str, list[tuple[str, str]]], set[str]]:
    """The events to produce (with a malformed one every 25), each user's expected
    history [(item, type)], and the event ids of the malformed ones."""
    kinds = ["view", "view", "click", "add_to_cart", "purchase"]
    depts = list(shop.DEPARTMENTS)
    messages: list[tuple[bytes, bytes]] = []
    expected: dict[str, list[tuple[str, str]]] = {}
    malformed: set[str] = set()
    for n in range(USERS * PER_USER):
        user = f"crash-user-{n % USERS}"
        if n % 25 == 24:
            event_id = f"bad-{n}"
            body = {"event_id": event_id, "user_id": user, "item_id": "x", "type": "teleport"}
            messages.append((user.encode(), json.dumps(body).encode()))
            malformed.add(event_id)
            continue
        item = f"{depts[(n // USERS) % len(depts)]}-{n % shop.PER_DEPARTMENT}"
        kind = kinds[n % len(kinds)]
        messages.append(event(f"e{n}", user, item, kind))
        expected.setdefault(user, []).append((item, kind))
    return messages, expected, malformed


class SteadyProducer(threading.Thread):
    """Produces ``messages`` in chunks at about ``rate`` per second, in order."""

    def __init__(self, settings: Settings, messages: list[tuple[bytes, bytes]], rate: int):
        super().__init__(daemon=True)
        self.settings = settings
        self.messages = messages
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        chunk = max(1, self.rate // 10)
        try:
            for start in range(0, len(self.messages), chunk):
                produce(
                    self.settings, self.settings.topic_events, self.messages[start : start + chunk]
                )
                self.sent = min(start + chunk, len(self.messages))
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _load_catalog(settings: Settings) -> int:
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    return len(items)


def _started(settings: Settings, start_worker, name: str, **update: object):
    """Settings for these tests (long histories, quick failure detection) with
    ``update``, the topics, a first worker and the catalog taken in."""
    settings = settings.model_copy(
        update={"history_length": PER_USER * 2, "kafka_session_timeout_s": 8.0, **update}
    )
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, name)
    _load_catalog(settings)
    return settings, worker


@contextlib.contextmanager
def _freezable_redis(tmp_path: Path) -> Iterator[tuple[SecretStr, int]]:
    """A redis-server of the test's own, to be frozen for a while: its URL and pid."""
    service = start_redis(tmp_path / "redis")
    try:
        yield SecretStr(service.address), int((tmp_path / "redis" / "redis.pid").read_text())
    finally:
        service.stop()


def _wait(condition: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log()}")
        time.sleep(0.2)


def _consumed(worker: WorkerProcess) -> float:
    try:
        return sum(
            worker.metric("streamrec_events_consumed_total", type=k)
            for k in ("view", "click", "add_to_cart", "purchase")
        )
    except OSError:
        return 0.0


def _check_exactly_once(
    settings: Settings,
    expected: dict[str, list[tuple[str, str]]],
    malformed: set[str],
    produced: list[tuple[bytes, bytes]],
) -> dict[str, Any]:
    """Every event answered, every history exactly as produced; returns the figures."""
    valid = [
        json.loads(v)["event_id"] for _, v in produced if json.loads(v)["event_id"] not in malformed
    ]
    recs = Collector(settings, settings.topic_recommendations)
    records = recs.wait_for(
        lambda rs: set(valid) <= {r["trigger_event_id"] for r in rs}, timeout=180
    )
    answered = [r["trigger_event_id"] for r in records]
    dlq = Collector(settings, settings.topic_dlq).wait_for(
        lambda rs: malformed <= {_dead_id(r) for r in rs}, timeout=60
    )
    client = sync_client(settings.redis_url.get_secret_value())
    try:
        applied = 0
        for user, wanted in expected.items():
            history = [tuple(json.loads(e)[:2]) for e in client.lrange(user_key(user, "h"), 0, -1)]
            assert history == wanted, f"{user}: Redis history differs from the produced stream"
            applied += len(history)
    finally:
        client.close()
    return {
        "produced": len(produced),
        "valid": len(valid),
        "applied": applied,
        "lists_published": len(answered),
        "lists_repeated": len(answered) - len(set(answered)),
        "dead_letters": len({_dead_id(r) for r in dlq} & malformed),
    }


def _dead_id(record: dict[str, Any]) -> str:
    try:
        return str(json.loads(base64.b64decode(record["original_b64"]))["event_id"])
    except (ValueError, KeyError, TypeError):
        return ""


def test_a_worker_killed_with_sigkill_twice_mid_stream_applies_every_event_once(
    settings, start_worker
):
    settings, worker = _started(settings, start_worker, "crash-0")
    messages, expected, malformed = _stream()
    producer = SteadyProducer(settings, messages, rate=60)
    producer.start()
    crashes = 0
    for cycle in range(2):
        # Let the worker take some events, then kill it without warning.
        running, seen = worker, _consumed(worker)
        _wait(lambda w=running, s=seen: _consumed(w) >= s + 20, 120, "events consumed", running.log)
        worker.proc.kill()
        worker.proc.wait()
        crashes += 1
        worker = start_worker(settings, f"crash-{cycle + 1}")
    producer.join(timeout=180)
    assert producer.error is None, producer.error
    assert producer.sent == len(messages)
    figures = _check_exactly_once(settings, expected, malformed, messages)
    assert figures["applied"] == figures["valid"]
    assert figures["dead_letters"] == len(malformed)
    figures["crashes"] = crashes
    print(f"\ncrash test figures: {figures}")  # noqa: T201 - reported in the test log


def test_when_one_of_two_workers_stops_mid_stream_the_other_takes_over(settings, start_worker):
    settings, first = _started(settings, start_worker, "first")
    second = start_worker(settings.model_copy(update={"metrics_port": free_port()}), "second")
    messages, expected, malformed = _stream()
    producer = SteadyProducer(settings, messages, rate=60)
    producer.start()
    _wait(
        lambda: min(_consumed(first), _consumed(second)) > 0,
        120,
        "both workers to own a partition",
        lambda: first.log() + second.log(),
    )
    second.proc.kill()  # gone without a goodbye: the group must notice and rebalance
    second.proc.wait()
    producer.join(timeout=180)
    assert producer.error is None, producer.error
    figures = _check_exactly_once(settings, expected, malformed, messages)
    assert figures["applied"] == figures["valid"]
    assert figures["dead_letters"] == len(malformed)
    print(f"\ntake-over figures: {figures}")  # noqa: T201 - reported in the test log


def test_a_kafka_broker_restart_mid_stream_loses_nothing(settings, start_worker, tmp_path):
    broker = start_kafka(tmp_path / "kafka")  # our own broker: the session's stays up
    try:
        settings, worker = _started(
            settings, start_worker, "restart", kafka_bootstrap=broker.address
        )
        messages, expected, malformed = _stream()
        half = len(messages) // 2
        produce(settings, settings.topic_events, messages[:half])
        _wait(lambda: _consumed(worker) >= 20, 120, "events consumed", worker.log)
        broker.stop()  # mid-stream: the worker loses its broker
        time.sleep(5)
        assert worker.proc.poll() is None, worker.log()
        broker.resume()
        produce(settings, settings.topic_events, messages[half:])
        figures = _check_exactly_once(settings, expected, malformed, messages)
        assert figures["applied"] == figures["valid"]
        assert figures["dead_letters"] == len(malformed)
        assert worker.proc.poll() is None, worker.log()
        print(f"\nbroker restart figures: {figures}")  # noqa: T201 - reported in the test log
    finally:
        broker.stop()


def test_redis_unreachable_mid_stream_is_waited_out_and_loses_nothing(
    settings, start_worker, tmp_path
):
    with _freezable_redis(tmp_path) as (url, pid):
        settings, worker = _started(
            settings, start_worker, "redis-outage", redis_url=url, redis_retry_max_s=1.0
        )
        messages, expected, malformed = _stream()
        producer = SteadyProducer(settings, messages, rate=60)
        producer.start()
        _wait(lambda: _consumed(worker) >= 20, 120, "events consumed", worker.log)
        os.kill(pid, signal.SIGSTOP)  # Redis stops answering: every call times out
        try:
            time.sleep(8)
            assert worker.proc.poll() is None, worker.log()
        finally:
            os.kill(pid, signal.SIGCONT)
        producer.join(timeout=180)
        assert producer.error is None, producer.error
        figures = _check_exactly_once(settings, expected, malformed, messages)
        assert figures["applied"] == figures["valid"]
        errors = sum(
            worker.metric("streamrec_redis_errors_total", op=op)
            for op in ("apply", "item_stats", "save", "get")
        )
        assert errors > 0, "the outage is counted"
        assert "redis apply failed" in worker.log() or "redis save failed" in worker.log()
        assert worker.proc.poll() is None, worker.log()
        figures["redis_errors_counted"] = errors
        print(f"\nredis outage figures: {figures}")  # noqa: T201 - reported in the test log


def test_a_worker_told_to_stop_while_redis_is_unreachable_stops_and_loses_nothing(
    settings, start_worker, tmp_path
):
    """Found by a probe: Faust waits without limit for the batch in flight, which waits
    for Redis, so SIGTERM did nothing for as long as Redis was down. The worker now
    waits STREAMREC_SHUTDOWN_DRAIN_S and leaves that batch uncommitted for the next one."""
    with _freezable_redis(tmp_path) as (url, pid):
        settings, first = _started(
            settings, start_worker, "stopped-during-outage", redis_url=url, shutdown_drain_s=3.0
        )
        messages, expected, malformed = _stream()
        os.kill(pid, signal.SIGSTOP)  # every Redis call times out from here
        try:
            produce(settings, settings.topic_events, messages)
            _wait(lambda: "redis apply failed" in first.log(), 60, "a batch in flight", first.log)
            started = time.monotonic()
            first.proc.terminate()
            first.proc.wait(timeout=60)
            took = time.monotonic() - started
            assert first.proc.returncode == 0, first.log()
            assert "not committed and will be consumed again" in first.log()
        finally:
            os.kill(pid, signal.SIGCONT)
        second = start_worker(settings, "after-outage")
        figures = _check_exactly_once(settings, expected, malformed, messages)
        assert figures["applied"] == figures["valid"]
        assert second.proc.poll() is None, second.log()
        print(f"\nstopped during a Redis outage in {took:.1f} s; figures: {figures}")  # noqa: T201
