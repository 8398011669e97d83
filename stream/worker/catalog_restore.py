"""Catalog first, then events: what a starting worker does before it joins the group.

A worker that processed events before it had read the catalog dead-lettered events for
catalog items as ``unknown_item`` (issue 24: 332 of 20,000 with a flushed Redis). So, like
Kafka Streams restoring a global table, a worker starts by reading ``STREAMREC_TOPIC_ITEMS``
itself, every partition, from its first offset up to the end offsets it finds at start
(read-committed, no consumer group), and stores in Redis every item Redis lacks. Only then
does it start Faust, join the consumer group and take events; the catalog it loads on its
first batch is then complete as of its start. Later items arrive through the group's items
agent, as before. Until it has caught up, the worker's ``/readyz`` (on the metrics port)
answers 503 with its progress, ``streamrec_catalog_ready`` is 0 and
``streamrec_catalog_restore_remaining`` counts the offsets still to read; the log reports
progress every :data:`PROGRESS_LOG_S`.

What is applied is what the items agent applies: per item id, its last valid version on
the topic; a tombstone (empty value) makes an item read before it unavailable and is
ignored otherwise; an invalid message is skipped (the items agent dead-letters it). Items
Redis already holds are never overwritten (a running worker may have stored a newer
version since this one started), so a worker joining a Redis that holds the catalog
writes nothing.

A topic that cannot be read does not let events through with half a catalog: the worker
keeps trying, logging an error every :data:`STALL_LOG_S` without progress and after each
failed attempt (backoff up to :data:`RETRY_MAX_S`); it stays unready meanwhile, and the
other workers of the group keep its share of the partitions. An empty topic (end offsets
at the first offsets) is caught up at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streamrec.engine.types import Item
from streamrec.stream.contracts import InvalidMessage, decode_item
from streamrec.stream.kafka_io import client_options
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import Metrics

log = logging.getLogger(__name__)

#: How often progress is logged while the catalog is read.
PROGRESS_LOG_S = 5.0
#: How long reading may make no progress before each error in the log.
STALL_LOG_S = 30.0
#: The longest wait between two attempts after a failed one.
RETRY_MAX_S = 30.0
#: How long one fetch waits for records.
FETCH_TIMEOUT_MS = 1000


class CatalogReadiness:
    """Whether the worker has caught up with the items topic, and how far it is; read by
    the ``/readyz`` handler (another thread) and mirrored in the metrics."""

    def __init__(self, topic: str, metrics: Metrics | None = None) -> None:
        self.topic = topic
        self._metrics = metrics
        self._lock = threading.Lock()
        self._ready = False
        self._read = 0
        self._total: int | None = None  # None: the end offsets are not known yet
        if metrics is not None:
            metrics.catalog_ready.set(0)

    def progress(self, read: int, total: int) -> None:
        with self._lock:
            self._read, self._total = read, total
        if self._metrics is not None:
            self._metrics.catalog_restore_remaining.set(max(0, total - read))

    def caught_up(self) -> None:
        with self._lock:
            self._ready = True
        if self._metrics is not None:
            self._metrics.catalog_ready.set(1)
            self._metrics.catalog_restore_remaining.set(0)

    def report(self) -> tuple[bool, str]:
        """(ready, one line for ``/readyz``)."""
        with self._lock:
            ready, read, total = self._ready, self._read, self._total
        if ready:
            return True, f"ready: the catalog has caught up with topic {self.topic!r}\n"
        where = "end offsets not read yet" if total is None else f"{read}/{total} offsets read"
        return False, f"not ready: reading the catalog from topic {self.topic!r} ({where})\n"


@dataclasses.dataclass
class CatalogFold:
    """The items topic folded as the items agent applies it: the last state per item id."""

    max_bytes: int
    items: dict[str, Item] = dataclasses.field(default_factory=dict)
    invalid: int = 0

    def add(self, value: bytes | None, key: bytes | None) -> None:
        if not value:
            if key:  # a tombstone: only an item read before is known to be withdrawn
                known = self.items.get(key.decode("utf-8", "replace"))
                if known is not None:
                    self.items[known.item_id] = dataclasses.replace(known, available=False)
            return
        try:
            item = decode_item(value, max_bytes=self.max_bytes)
        except InvalidMessage:
            self.invalid += 1
            return
        self.items[item.item_id] = item


async def restore_catalog(
    settings: Settings,
    readiness: CatalogReadiness,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Read the items topic up to its end offsets at start into Redis (see the module
    docstring), retrying until it succeeds; returns how many items were added to Redis."""
    delay = 1.0
    while True:
        try:
            return await _restore_once(settings, readiness, clock)
        except (KafkaError, RedisError, OSError, TimeoutError) as exc:
            log.error(  # noqa: TRY400 - the error's kind and message, not a traceback
                "catalog: reading topic %r failed (%s: %s); events wait for the catalog, "
                "trying again in %.0f s",
                settings.topic_items,
                type(exc).__name__,
                exc,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(RETRY_MAX_S, delay * 2)


async def _restore_once(
    settings: Settings, readiness: CatalogReadiness, clock: Callable[[], float]
) -> int:
    topic = settings.topic_items
    started = clock()
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",  # as the worker's own consumer reads
        max_partition_fetch_bytes=max(1 << 20, settings.max_message_bytes),
    )
    await consumer.start()
    try:
        partitions = await _partitions(settings)
        if not partitions:
            msg = f"topic {topic!r} (STREAMREC_TOPIC_ITEMS) has no partitions yet"
            raise KafkaError(msg)
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        readiness.progress(0, total)
        fold = CatalogFold(settings.max_message_bytes)
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        if pending:
            log.info(
                "catalog: reading topic %r up to its end offsets (%d offsets, %d "
                "partition(s)) before processing events",
                topic,
                total,
                len(partitions),
            )
        for tp in pending:
            consumer.seek(tp, starts[tp])
        read = 0
        logged = progressed = clock()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
            for tp, records in batch.items():
                _fold_records(fold, records, ends[tp])
            done = 0
            for tp in partitions:
                position = await consumer.position(tp) if tp in pending else ends[tp]
                done += max(0, min(position, ends[tp]) - starts[tp])
                if position >= ends[tp]:
                    pending.discard(tp)
            now = clock()
            if done > read:
                read, progressed = done, now
                readiness.progress(read, total)
            if pending and now - logged >= PROGRESS_LOG_S:
                logged = now
                log.info("catalog: %d/%d offsets of topic %r read", read, total, topic)
            if pending and now - progressed >= STALL_LOG_S:
                progressed = now
                log.error(
                    "catalog: no progress reading topic %r for %.0f s (%d/%d offsets read, "
                    "partitions %s behind); events wait for the catalog, still trying",
                    topic,
                    STALL_LOG_S,
                    read,
                    total,
                    sorted(tp.partition for tp in pending),
                )
    finally:
        await consumer.stop()
    added = await _store_missing(settings, fold.items.values())
    readiness.progress(total, total)
    readiness.caught_up()
    log.info(
        "catalog: caught up with topic %r in %.1f s (%d offsets read, %d items, %d added to "
        "Redis, %d invalid messages skipped); processing events",
        topic,
        clock() - started,
        total,
        len(fold.items),
        added,
        fold.invalid,
    )
    return added


async def _partitions(settings: Settings) -> list[TopicPartition]:
    topic = settings.topic_items
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for t in described for p in t["partitions"])
    return [TopicPartition(topic, p) for p in numbers]


def _fold_records(fold: CatalogFold, records: Iterable[ConsumerRecord], end: int) -> None:
    for record in records:
        if record.offset < end:  # later ones are the items agent's
            fold.add(record.value, record.key)


async def _store_missing(settings: Settings, items: Iterable[Item]) -> int:
    store = RedisStore.from_settings(settings)
    try:
        return await store.add_missing_items(list(items))
    finally:
        await store.close()
