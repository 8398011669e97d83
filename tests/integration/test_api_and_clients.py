"""The HTTP read API over real HTTP, and the client helpers against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.engine.types import Recommendation
from streamrec.stream.cli.local_infra import start_redis
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.client import AsyncEventProducer, EventProducer, recommendations
from streamrec.stream.contracts import InvalidMessage, encode_item
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.redis_store import user_key
from streamrec.stream.settings import Settings
from tests import shop
from tests.conftest import ROOT, free_port, settings_env
from tests.integration.kafka_helpers import produce
from tests.redis_cluster import sync_client

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamrec",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the API did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10)

    def log(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self._log.close()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator:
    started: list[Api] = []

    def start(settings: Settings) -> Api:
        api = Api(settings, tmp_path / f"api-{len(started)}.log")
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def _first_list_for(settings: Settings, user: str) -> Recommendation:
    async def run() -> Recommendation:
        async with contextlib.aclosing(recommendations(settings, from_beginning=True)) as recs:
            async for rec in recs:
                if rec.user_id == user:
                    return rec
        msg = "the recommendations topic ended"
        raise AssertionError(msg)

    return asyncio.run(asyncio.wait_for(run(), 90))


def test_events_sent_with_the_helpers_come_back_as_typed_lists_and_over_http(
    settings, start_worker, start_api
):
    asyncio.run(ensure_topics(settings))
    start_worker(settings)
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))

    with EventProducer(settings) as events:
        sent = events.send(user_id="api-user", item_id="running-1", type="view")
        slashed = events.send(user_id="team/a b", item_id="running-2", type="view")
        with pytest.raises(InvalidMessage, match="type"):
            events.send(user_id="api-user", item_id="running-1", type="teleport")

    async def send_async() -> None:
        async with AsyncEventProducer(settings) as p:
            await p.send(user_id="async-user", item_id="books-2", type="purchase", event_id="a1")

    asyncio.run(send_async())
    rec = _first_list_for(settings, "api-user")
    assert rec.trigger_event_id == sent.event_id
    assert len(rec.items) == 10
    assert all(i.reason for i in rec.items)
    assert _first_list_for(settings, "async-user").trigger_event_id == "a1"

    api = start_api(settings)
    got = api.get("/v1/users/api-user/recommendations")
    assert got.status_code == 200
    body = got.json()
    # The topic's JSON, field for field (an outside probe found the list id missing).
    assert body["recommendation_id"] == rec.recommendation_id
    assert body["experiment"] is None
    assert body["variant"] is None
    assert body["trigger_event_id"] == sent.event_id
    assert [i["item_id"] for i in body["items"]] == [i.item_id for i in rec.items]
    assert [i["reason"] for i in body["items"]] == [i.reason for i in rec.items]
    assert api.get("/v1/users/nobody/recommendations").status_code == 404
    _first_list_for(settings, "team/a b")
    slash = api.get("/v1/users/team%2Fa%20b/recommendations")
    assert slash.status_code == 200, slash.text
    assert slash.json()["trigger_event_id"] == slashed.event_id
    # A stored value the API cannot read is a 500 with a message, the user id not logged.
    client = sync_client(settings.redis_url.get_secret_value())
    client.set(user_key("corrupt-user", "recs"), b"not json")
    client.rpush(user_key("list-user", "recs"), b"x")
    client.close()
    for user in ("corrupt-user", "list-user"):
        broken = api.get(f"/v1/users/{user}/recommendations")
        assert broken.status_code == 500
        assert broken.json() == {"detail": "the stored list could not be read"}
        assert user not in api.log()
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = {"redis": "ok", "user_ids": "ok", "catalog": "ok", "kafka": "ok", "index": "ok"}
    assert ready.json()["checks"] == checks
    spec = api.get("/openapi.json").json()
    assert "/v1/users/{user_id}/recommendations" in spec["paths"]
    answers = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]
    assert {"200", "404", "500", "503"} <= set(answers)
    assert {"/healthz", "/readyz"} <= set(spec["paths"])


def test_readiness_says_what_is_missing(settings, start_api, tmp_path):
    broken = settings.model_copy(
        update={
            "redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
            "model_dir": tmp_path / "no-model",
        }
    )
    api = start_api(broken)
    assert api.get("/healthz").status_code == 200  # alive, just not ready
    ready = api.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["kafka"] == "ok"
    assert "STREAMREC_REDIS_URL" in checks["redis"]
    assert "STREAMREC_MODEL_DIR" in checks["index"]
    unanswered = api.get("/v1/users/u/recommendations")
    assert unanswered.status_code == 503
    assert "ConnectionError on every try" in unanswered.json()["detail"]


def test_a_wrong_redis_password_is_named_by_both_readiness_and_reads(settings, start_api, tmp_path):
    password = "right-Pa55word"  # noqa: S105 - test fixture
    protected = start_redis(tmp_path / "protected", {"REDIS_PASSWORD": password})
    try:
        wrong = protected.address.replace(password, "wrong-Pa55word")
        api = start_api(settings.model_copy(update={"redis_url": SecretStr(wrong)}))
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert "AuthenticationError" in ready.json()["checks"]["redis"]
        answer = api.get("/v1/users/u/recommendations")
        assert answer.status_code == 503
        assert "AuthenticationError on every try" in answer.json()["detail"]
        assert "Pa55word" not in answer.text + ready.text + api.log()
    finally:
        protected.stop()
