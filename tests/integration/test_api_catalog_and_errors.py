"""The HTTP API tells an operator when no catalog is published (``/readyz``), and never
echoes a huge user id back in an error.

The app runs in-process (httpx's ASGI transport, with the app's lifespan) and as
``streamrec api`` over real HTTP, against the real redis-server and broker.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.api import ECHO_MAX_CHARS, capped, create_api
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from tests import shop
from tests.integration.test_api_and_clients import Api

pytestmark = pytest.mark.integration

COMMAND = "streamrec replay --catalog PATH --catalog-only"


def _put_catalog(settings: Settings) -> None:
    async def put() -> None:
        store = RedisStore.from_settings(settings)
        await store.put_items(catalog_items(shop.catalog()))
        await store.close()

    asyncio.run(put())


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app itself, its lifespan (the Redis store) running."""
    app = create_api(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


def get(settings: Settings, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        async with in_process(settings) as client:
            return await client.get(path)

    return asyncio.run(run())


@pytest.fixture
def api(settings, tmp_path):
    started = Api(settings, tmp_path / "api.log")
    yield started
    started.stop()


def test_readiness_reports_an_empty_catalog_with_the_command_that_publishes_one(settings, api):
    empty = api.get("/readyz")
    assert empty.status_code == 503, empty.text
    checks = empty.json()["checks"]
    assert {k: v for k, v in checks.items() if k != "catalog"} == {
        "redis": "ok",
        "user_ids": "ok",
        "kafka": "ok",
        "index": "ok",
    }
    assert checks["catalog"].startswith("empty")
    assert COMMAND in checks["catalog"]
    assert settings.topic_items in checks["catalog"]
    assert "unknown_item" in checks["catalog"]

    _put_catalog(settings)  # what a worker does with the items topic's messages
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["catalog"] == "ok"


def test_the_catalog_is_not_checked_while_redis_does_not_answer(settings, shop_model):
    unreachable = settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})
    checks = get(unreachable, "/readyz").json()["checks"]
    assert "STREAMREC_REDIS_URL" in checks["redis"]
    assert checks["catalog"] == "-"


def test_a_100_kb_user_id_comes_back_capped_over_real_http(api):
    """As a newcomer sent it with curl (httpx refuses URLs over 64 kB)."""
    user_id = "u" * 100_000
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        connection.request("GET", f"/v1/users/{user_id}/recommendations")
        answer = connection.getresponse()
        status, body = answer.status, answer.read()
    finally:
        connection.close()
    assert status == 422
    assert len(body) < 1000
    [error] = json.loads(body)["detail"]
    assert error["loc"] == ["path", "user_id"]
    assert error["type"] == "string_too_long"
    assert error["input"] == "u" * ECHO_MAX_CHARS + "… (100000 chars)"


def test_the_cap_counts_characters_not_bytes():
    user_id = "ü" * 5000
    answer = get(Settings(), f"/v1/users/{user_id}/recommendations")  # before Redis is asked
    assert answer.status_code == 422
    assert len(answer.content) < 1000
    assert answer.json()["detail"][0]["input"] == "ü" * ECHO_MAX_CHARS + "… (5000 chars)"


def test_only_what_is_longer_than_the_cap_is_cut_wherever_it_sits():
    assert capped("u" * ECHO_MAX_CHARS) == "u" * ECHO_MAX_CHARS
    assert capped({"ids": ["a" * 70, 3]}) == {"ids": ["a" * ECHO_MAX_CHARS + "… (70 chars)", 3]}
