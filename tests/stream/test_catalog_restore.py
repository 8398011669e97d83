"""Catalog first, then events (issue 24), piece by piece: the items topic folded as the
items agent applies it, Redis filled without overwriting what it holds, the readiness the
worker reports while it reads, and a topic that cannot be read retried, never skipped.

The whole path, a real worker against the real broker, is in
tests/integration/test_catalog_first.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from streamrec.engine.types import Item
from streamrec.stream.contracts import encode_item
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker import catalog_restore
from streamrec.stream.worker.catalog_restore import CatalogFold, CatalogReadiness, restore_catalog
from streamrec.stream.worker.health import serve
from streamrec.stream.worker.metrics import Metrics
from tests.conftest import free_port

TENT = Item("tent", "Summit Tent", "outdoor", price=100.0)
STOVE = Item("stove", "Camp Stove", "outdoor", price=30.0)


def _fold(*messages: tuple[bytes | None, bytes | None]) -> CatalogFold:
    fold = CatalogFold(max_bytes=1 << 20)
    for key, value in messages:
        fold.add(value, key)
    return fold


def test_the_last_version_of_each_item_counts():
    cheaper = dataclasses.replace(TENT, price=80.0)
    fold = _fold(
        (b"tent", encode_item(TENT)),
        (b"stove", encode_item(STOVE)),
        (b"tent", encode_item(cheaper)),
    )
    assert fold.items == {"tent": cheaper, "stove": STOVE}


def test_a_tombstone_withdraws_an_item_read_before_and_is_ignored_otherwise():
    fold = _fold((b"tent", encode_item(TENT)), (b"tent", b""), (b"stove", None))
    assert fold.items == {"tent": dataclasses.replace(TENT, available=False)}


def test_an_invalid_message_is_skipped_and_the_version_before_it_kept():
    fold = _fold((b"tent", encode_item(TENT)), (b"tent", b'{"item_id": "tent"'), (None, b"[]"))
    assert fold.items == {"tent": TENT}
    assert fold.invalid == 2


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_readyz_answers_503_with_the_progress_until_the_catalog_has_caught_up():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    readiness = CatalogReadiness("streamrec.items", metrics)
    port = free_port()
    server = serve("127.0.0.1", port, registry, readiness.report)
    try:
        assert _get(port, "/readyz") == (
            503,
            "not ready: reading the catalog from topic 'streamrec.items' (end offsets not "
            "read yet)\n",
        )
        readiness.progress(500, 1682)
        status, body = _get(port, "/readyz")
        assert (status, "(500/1682 offsets read)" in body) == (503, True)
        assert registry.get_sample_value("streamrec_catalog_ready") == 0
        assert registry.get_sample_value("streamrec_catalog_restore_remaining") == 1182

        readiness.caught_up()
        status, body = _get(port, "/readyz")
        assert status == 200
        assert body.startswith("ready")
        assert registry.get_sample_value("streamrec_catalog_ready") == 1
        assert registry.get_sample_value("streamrec_catalog_restore_remaining") == 0
        status, body = _get(port, "/metrics")
        assert status == 200
        assert "streamrec_catalog_ready 1.0" in body
    finally:
        server.shutdown()
        server.server_close()


def test_a_topic_that_cannot_be_read_is_retried_with_an_error_never_skipped(monkeypatch, caplog):
    attempts: list[int] = []
    waits: list[float] = []

    async def failing_twice(settings, readiness, clock):  # type: ignore[no-untyped-def]
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError
        readiness.caught_up()
        return 7

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(catalog_restore, "_restore_once", failing_twice)
    monkeypatch.setattr(catalog_restore.asyncio, "sleep", no_wait)
    readiness = CatalogReadiness("streamrec.items")
    assert asyncio.run(restore_catalog(Settings(), readiness)) == 7
    assert readiness.report()[0]
    assert waits == [1.0, 2.0]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert "'streamrec.items'" in errors[0].getMessage()
    assert "events wait for the catalog" in errors[0].getMessage()


@pytest.mark.integration
def test_redis_gets_the_items_it_lacks_and_keeps_the_ones_it_holds(redis_url):
    async def run() -> tuple[int, int, list[Item], list[Item]]:
        store = RedisStore.from_url(
            redis_url, history_length=20, dedupe_ttl_s=600, recommendation_ttl_s=600
        )
        try:
            newer = dataclasses.replace(TENT, price=120.0)
            await store.put_items([newer])  # stored by a running worker meanwhile
            _, position = await store.catalog_snapshot()
            added = await store.add_missing_items([TENT, STOVE], chunk=1)
            again = await store.add_missing_items([TENT, STOVE])
            snapshot, _ = await store.catalog_snapshot()
            changes, _ = await store.catalog_changes(position)
        finally:
            await store.close()
        return added, again, snapshot, changes

    added, again, snapshot, changes = asyncio.run(run())
    assert (added, again) == (1, 0)
    assert sorted(snapshot, key=lambda i: i.item_id) == [
        STOVE,
        dataclasses.replace(TENT, price=120.0),
    ]
    assert changes == [STOVE]  # the other workers re-read only what was added
