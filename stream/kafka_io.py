"""Kafka plumbing outside the Faust app: topic creation, producing, consuming.

Used by the CLI (replay, watch, demo), the tests and the benchmarks. Errors name the
setting to change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from stream.settings import Settings

log = logging.getLogger(__name__)


class KafkaUnavailableError(RuntimeError):
    """The configured bootstrap servers do not answer."""


def _unreachable(settings: Settings, exc: BaseException) -> KafkaUnavailableError:
    msg = (
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); "
        "check STREAMREC_KAFKA_BOOTSTRAP and that the broker is running"
    )
    return KafkaUnavailableError(msg)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The topics streamrec uses, with their partitioning and cleanup policy."""
    n = settings.topic_partitions
    return [
        NewTopic(settings.topic_events, num_partitions=n, replication_factor=1),
        NewTopic(
            settings.topic_items,
            num_partitions=1,
            replication_factor=1,
            topic_configs={"cleanup.policy": "compact"},
        ),
        NewTopic(settings.topic_recommendations, num_partitions=n, replication_factor=1),
        NewTopic(settings.topic_dlq, num_partitions=1, replication_factor=1),
    ]


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create any missing streamrec topic; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        raise _unreachable(settings, exc) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_specs(settings) if t.name not in existing]
        created = []
        for topic in missing:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


@asynccontextmanager
async def producer(settings: Settings, **kwargs: object) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **kwargs)
    try:
        await prod.start()
    except (KafkaConnectionError, OSError) as exc:
        await prod.stop()
        raise _unreachable(settings, exc) from exc
    try:
        yield prod
    finally:
        await prod.stop()


async def send_all(
    prod: AIOKafkaProducer, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> int:
    """Send (key, value) pairs and wait until Kafka acknowledged all of them."""
    futures = [await prod.send(topic, value=v, key=k) for k, v in messages]
    await asyncio.gather(*futures)
    return len(futures)


@asynccontextmanager
async def consumer(
    settings: Settings,
    topics: Sequence[str],
    *,
    from_beginning: bool = False,
    group_id: str | None = None,
) -> AsyncIterator[AIOKafkaConsumer]:
    cons = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
    )
    try:
        await cons.start()
    except (KafkaConnectionError, OSError) as exc:
        await cons.stop()
        raise _unreachable(settings, exc) from exc
    try:
        yield cons
    finally:
        await cons.stop()
