"""Small synchronous helpers for integration tests: produce and collect over real Kafka."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.stream.settings import Settings


def produce(
    settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    async def run() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await prod.start()
        try:
            futures = [await prod.send(topic, value=v, key=k) for k, v in messages]
            await asyncio.gather(*futures)
        finally:
            await prod.stop()

    asyncio.run(run())


def event(
    event_id: str, user: str, item: str, kind: str = "view", **extra: Any
) -> tuple[bytes, bytes]:
    body = {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": time.time_ns() // 1_000_000,
        **extra,
    }
    return user.encode(), json.dumps(body).encode()


class Collector:
    """Reads a topic from the beginning and keeps every JSON record it has seen."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self.keys: list[bytes | None] = []

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        async def run() -> None:
            cons = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.settings.bootstrap_servers,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await cons.start()
            try:
                deadline = time.monotonic() + timeout
                self.records.clear()
                self.keys.clear()
                while not done(self.records) and time.monotonic() < deadline:
                    batch = await cons.getmany(timeout_ms=200)
                    for recs in batch.values():
                        for r in recs:
                            self.records.append(json.loads(r.value))
                            self.keys.append(r.key)
            finally:
                await cons.stop()

        asyncio.run(run())
        if not done(self.records):
            msg = f"timed out after {timeout}s on {self.topic}; got {len(self.records)} records"
            raise AssertionError(msg)
        return self.records

    def by_trigger(self, *event_ids: str, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        want = set(event_ids)

        def done(records: list[dict[str, Any]]) -> bool:
            return want <= {r["trigger_event_id"] for r in records}

        records = self.wait_for(done, timeout)
        return {r["trigger_event_id"]: r for r in records if r["trigger_event_id"] in want}
