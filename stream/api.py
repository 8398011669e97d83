"""HTTP read API (FastAPI): the latest recommendations of a user, health and readiness.

``streamrec api`` serves it with uvicorn. It reads what the workers store in Redis and
never writes; events still go through Kafka.

* ``GET /v1/users/{user_id}/recommendations`` -> the latest list with reasons and
  evidence (the ``streamrec.recommendations`` message), 404 when none is stored.
* ``GET /healthz`` -> 200 while the process runs (liveness).
* ``GET /readyz`` -> 200 when Redis and Kafka answer, the API keys user ids as the
  workers do (the same ``STREAMREC_USER_ID_HMAC_KEY``, or none), a catalog has been
  published and the model's index is on disk, else 503 with what is missing (readiness).
* ``GET /openapi.json``, ``/docs`` -> the OpenAPI description.

Error responses never echo more than :data:`ECHO_MAX_CHARS` characters of what the
client sent (a 100 kB user id comes back as its start and its length).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ResponseError

from streamrec.stream.kafka_io import KafkaUnavailableError, ensure_reachable
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.redis_store.catalog import PUBLISH_CATALOG_COMMAND
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)


class RecommendedItemOut(BaseModel):
    item_id: str
    rank: int
    score: float
    reason: str
    reason_code: str
    evidence: dict[str, Any]


class RecommendationOut(BaseModel):
    """The latest list published for the user (the ``streamrec.recommendations`` message,
    field for field; ``recommendation_id`` is null only for lists stored by versions that
    did not set it)."""

    recommendation_id: str | None = None
    experiment: str | None = None
    variant: str | None = None
    user_id: str
    trigger_event_id: str
    generated_at: int
    model_version: str
    items: list[RecommendedItemOut]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


def create_api(settings: Settings) -> FastAPI:
    """The FastAPI app over the settings' Redis, Kafka and model folder."""
    store: dict[str, RedisStore] = {}
    # The kind of the latest Redis error (never its message: it may quote the URL), so that
    # a 503 says why Redis did not answer; cleared as each request starts.
    last_error: dict[str, str] = {}

    def remember(_op: str, exc: BaseException) -> None:
        last_error["redis"] = type(exc).__name__

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store["redis"] = RedisStore.from_settings(settings, retry_max_s=0.5, on_error=remember)
        try:
            yield
        finally:
            await store["redis"].close()

    app = FastAPI(
        title="streamrec",
        summary="Latest real-time recommendations, with a truthful reason for each item.",
        version="1",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with what the client sent cut to :data:`ECHO_MAX_CHARS`."""
        errors = [
            {k: capped(v) if k in ("input", "loc") else v for k, v in e.items()}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.get(
        # ``:path``: a user id may hold "/" (sent as %2F), as it may on the events topic.
        "/v1/users/{user_id:path}/recommendations",
        response_model=RecommendationOut,
        responses={
            404: {"description": "No list stored for this user (yet, or any more)."},
            500: {"description": "The stored list could not be read."},
            503: {
                "description": "Redis did not answer in time; the detail names the error "
                "seen on each try, if any (see /readyz)."
            },
        },
    )
    async def recommendations(
        user_id: str = Path(min_length=1, max_length=256),
    ) -> RecommendationOut:
        last_error.pop("redis", None)
        try:
            raw = await asyncio.wait_for(
                store["redis"].latest_recommendation(user_id), timeout=READ_TIMEOUT_S
            )
            if raw is None:
                raise HTTPException(404, "no recommendations stored for this user")
            return RecommendationOut.model_validate_json(raw)
        except TimeoutError as exc:
            seen = last_error.get("redis")
            why = f": {seen} on every try" if seen else ""
            detail = f"Redis did not answer in time{why} (see /readyz)"
            raise HTTPException(503, detail) from exc
        except (ValueError, ResponseError) as exc:  # pydantic's ValidationError is a ValueError
            # The message may quote the stored value, with the user id: not logged.
            log.warning("a stored list could not be read (%s)", type(exc).__name__)
            raise HTTPException(500, "the stored list could not be read") from None

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        redis_check = await _check_redis(store["redis"])
        checks = {
            "redis": redis_check,
            "user_ids": await _check_user_ids(store["redis"]) if redis_check == "ok" else "-",
            "catalog": await _check_catalog(store["redis"], settings)
            if redis_check == "ok"
            else "-",
            "kafka": await _check_kafka(settings),
            "index": "ok"
            if (settings.index_dir / "items.ids.json").is_file()
            else f"no index in {settings.index_dir} (STREAMREC_MODEL_DIR)",
        }
        ready = all(v == "ok" for v in checks.values())  # "-" only when Redis is not ok
        body = Readiness(ready=ready, checks=checks)
        if not ready:
            return JSONResponse(status_code=503, content=body.model_dump())
        return body

    return app


#: How long a request waits for Redis before answering 503.
READ_TIMEOUT_S = 2.0
#: Characters of a client's input (a user id) that an error response echoes at most.
ECHO_MAX_CHARS = 64


def capped(value: Any) -> Any:
    """``value`` with every string longer than :data:`ECHO_MAX_CHARS` cut to its start and
    its length (``"aaa…aaa… (100000 chars)"``), inside lists and dicts too."""
    if isinstance(value, str) and len(value) > ECHO_MAX_CHARS:
        return f"{value[:ECHO_MAX_CHARS]}… ({len(value)} chars)"
    if isinstance(value, dict):
        return {capped(k): capped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [capped(v) for v in value]
    return value


async def _check_redis(store: RedisStore) -> str:
    try:
        await asyncio.wait_for(store.client.ping(), timeout=READ_TIMEOUT_S)
    except (TimeoutError, OSError, ConnectionError) as exc:
        return f"unreachable ({type(exc).__name__}); check STREAMREC_REDIS_URL"
    except Exception as exc:  # noqa: BLE001 - redis-py's own errors: report, never crash
        return f"error ({type(exc).__name__}); check STREAMREC_REDIS_URL"
    return "ok"


async def _check_user_ids(store: RedisStore) -> str:
    """Whether this API keys users as the workers do (the same HMAC key, or none)."""
    try:
        problem = await asyncio.wait_for(store.pseudonym_mismatch(), timeout=READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - report, never crash
        return f"error ({type(exc).__name__})"
    return "ok" if problem is None else problem


async def _check_catalog(store: RedisStore, settings: Settings) -> str:
    """Whether a catalog has been published: without one, workers dead-letter every event."""
    try:
        size = await asyncio.wait_for(store.catalog_size(), timeout=READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - report, never crash
        return f"error ({type(exc).__name__})"
    if size:
        return "ok"
    return (
        "empty: no catalog item in Redis, so the workers dead-letter every event as "
        f"unknown_item; publish a catalog to {settings.topic_items} (STREAMREC_TOPIC_ITEMS) "
        f"with `{PUBLISH_CATALOG_COMMAND}`"
    )


async def _check_kafka(settings: Settings) -> str:
    try:
        await ensure_reachable(settings, timeout_s=READ_TIMEOUT_S)
    except KafkaUnavailableError as exc:
        return str(exc)
    return "ok"


def run_api(settings: Settings, host: str, port: int) -> None:
    """Serve the API with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(create_api(settings), host=host, port=port, log_level="warning")
