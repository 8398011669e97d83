"""Feeding the worker's pipeline directly (no Kafka) from benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from streamrec.engine.offline.datasets import load_movielens_100k
from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.settings import Settings
from streamrec.stream.worker.pipeline import Pipeline, RawMessage
from streamrec.stream.worker.service import build_pipeline


def bench_settings(redis_url: str, model_dir: Path, **overrides: Any) -> Settings:
    """Worker settings for an in-process pipeline on a benchmark's own redis-server: no
    metrics port, warnings only, ``overrides`` on top."""
    return Settings(
        redis_url=redis_url,  # type: ignore[arg-type]
        model_dir=model_dir,
        metrics_port=0,
        log_level="WARNING",
        **overrides,
    )


async def ready_pipeline(settings: Settings) -> Pipeline:
    """The worker's pipeline (``streamrec.stream.worker.service.build_pipeline``) with the
    MovieLens-100K
    catalog in its store and taken in, as a worker has it before its first event."""
    pipeline = build_pipeline(settings, CollectorRegistry())
    await pipeline.store.put_items(catalog_items(load_movielens_100k().catalog))
    await pipeline.sync_catalog()
    return pipeline


def event_messages(rows: list[dict[str, Any]], offset: int) -> list[RawMessage]:
    """Event-log rows as the raw Kafka messages a worker consumes (offsets from ``offset``)."""
    return [
        RawMessage(
            json.dumps(
                {
                    "event_id": str(r["event_id"]),
                    "user_id": str(r["user_id"]),
                    "item_id": str(r["item_id"]),
                    "type": r["type"],
                    "ts": int(r["ts"]),
                }
            ).encode(),
            str(r["user_id"]).encode(),
            "events",
            0,
            offset + j,
        )
        for j, r in enumerate(rows)
    ]
