"""``streamrec reasons upgrade``: the reason writer, a process of its own beside the workers.

It follows ``STREAMREC_TOPIC_RECOMMENDATIONS`` in its own consumer group (from the latest
offset: a writer that starts late does not upgrade old lists), keeps at most
``STREAMREC_REASON_UPGRADE_QUEUE`` lists (the oldest dropped first), and for each list asks
the language model for its top ``STREAMREC_REASON_UPGRADE_TOP_N`` items' sentences
(:class:`~streamrec.engine.reasons.upgrade.ReasonUpgrader`: batched, cached by prompt,
guarded). For every list with an upgraded item it publishes a
``STREAMREC_TOPIC_REASON_UPDATES`` message (``schemas/reason_update.schema.json``) and
puts the new sentences into the user's stored list, which ``streamrec api`` and
``streamrec explain`` serve, unless a newer list replaced it meanwhile.

With frames (``STREAMREC_REASON_UPGRADE_FRAMES``, the default) the frame sentences the
model wrote are kept in Redis per model and language (:func:`model_tag`), so a restarted
or added writer starts with them instead of minutes of generation.

Upgrades are best effort: offsets are committed automatically, so a writer that stops
may skip the lists in flight, which keep their template reasons. Nothing here is on the
event path; a slow model delays upgrades, never lists.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.scheduling import Planned, UpgradeScheduler
from streamrec.engine.reasons.upgrade import (
    UPGRADE_OUTCOMES,
    CompleteBatch,
    ReasonUpgrade,
    ReasonUpgrader,
    UpgradeStats,
    WorkQueue,
)
from streamrec.engine.types import Recommendation
from streamrec.stream.contracts import (
    ReasonUpdateItem,
    ReasonUpdateMessage,
    encode_reason_update,
    recommendation_from_json,
)
from streamrec.stream.kafka_io import client_options
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)

#: Outcomes counted beside the upgrader's own: ``dropped`` (the queue was full),
#: ``stale`` (published, but a newer list had replaced the stored one), ``unreadable``
#: (a message on the recommendations topic that is not a list).
WRITER_OUTCOMES = (*UPGRADE_OUTCOMES, "dropped", "stale", "unreadable")
CATALOG_REFRESH_S = 30.0
LISTS_PER_ROUND = 64


class WriterMetrics:
    """The reason writer's Prometheus metrics (its own registry and port)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.upgrades = Counter(
            "streamrec_reason_upgrades_total",
            "Top-N items of published lists by what the reason writer did with them",
            ["outcome"],
            registry=registry,
        )
        for outcome in WRITER_OUTCOMES:
            self.upgrades.labels(outcome=outcome)
        self.rejections = Counter(
            "streamrec_reason_guard_rejections_total",
            "Model sentences the faithfulness guard rejected, by rule",
            ["rule"],
            registry=registry,
        )
        self.latency = Histogram(
            "streamrec_reason_upgrade_seconds",
            "From a list's generated_at to its reason update being published",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
            registry=registry,
        )
        self.queue = Gauge(
            "streamrec_reason_upgrade_queue",
            "Lists waiting for the reason writer",
            registry=registry,
        )
        self.model_calls = Counter(
            "streamrec_reason_model_calls_total",
            "Calls to the language model (each with up to STREAMREC_REASON_UPGRADE_BATCH prompts)",
            registry=registry,
        )

    def record(self, stats: UpgradeStats) -> None:
        for outcome, n in stats.outcomes.items():
            self.upgrades.labels(outcome=outcome).inc(n)
        for rule, n in stats.rejections.items():
            self.rejections.labels(rule=rule).inc(n)
        self.model_calls.inc(stats.model_calls)


def model_tag(settings: Settings) -> str:
    """A short name for the model the settings choose (server URL and model name, or the
    local model's path), under which its frame sentences are stored: another model
    writes its own. A model changed in place under the same name is not noticed: its
    old sentences still pass the guard, which checks every use."""
    source = f"{settings.reason_lm_url or 'local'}|{settings.reason_lm_model or 'smollm2'}"
    return hashlib.blake2b(source.encode(), digest_size=6).hexdigest()


def update_message(upgrade: ReasonUpgrade, upgraded_at: int) -> ReasonUpdateMessage:
    """The contract message of one upgrade."""
    return ReasonUpdateMessage(
        recommendation_id=upgrade.recommendation_id,
        user_id=upgrade.user_id,
        trigger_event_id=upgrade.trigger_event_id,
        list_generated_at=upgrade.list_generated_at,
        upgraded_at=upgraded_at,
        language=upgrade.language,
        items=[ReasonUpdateItem(i.item_id, i.rank, i.reason, i.reason_code) for i in upgrade.items],
    )


@dataclass
class ReasonWriter:
    """The writer's loop: follow the lists, upgrade them, publish and store the upgrades."""

    settings: Settings
    upgrader: ReasonUpgrader
    store: RedisStore
    metrics: WriterMetrics
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000

    def __post_init__(self) -> None:
        self.queue: WorkQueue[Recommendation] = WorkQueue(self.settings.reason_upgrade_queue)
        self.scheduler = UpgradeScheduler(self.upgrader, self.settings.reason_upgrade_queue)
        self._catalog_position = "0-0"
        self._answered: list[Planned] = []  # waiting lists the model's answers made ready
        self._model = model_tag(self.settings)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        await self._load_catalog()
        if self.upgrader.frames:
            frames = await self.store.load_reason_frames(self._model, self.upgrader.language)
            self.upgrader.preload(frames)
            log.info("reason writer: %d stored sentence frames loaded", len(frames))
        options = client_options(self.settings)
        consumer = AIOKafkaConsumer(
            self.settings.topic_recommendations,
            group_id=f"{self.settings.app_id}-reason-writer",
            auto_offset_reset="latest",
            enable_auto_commit=True,
            **options,
        )
        producer = AIOKafkaProducer(acks="all", **options)
        await consumer.start()
        await producer.start()
        log.info(
            "reason writer: following %s, publishing to %s (top %d items, %s)",
            self.settings.topic_recommendations,
            self.settings.topic_reason_updates,
            self.upgrader.top_n,
            self.upgrader.language,
        )
        fetching = asyncio.create_task(self._fetch(consumer, stop))
        fetching.add_done_callback(lambda _: stop.set())  # no lists coming: stop, loudly
        try:
            await self._work(producer, stop)
            if fetching.done() and not fetching.cancelled() and fetching.exception():
                raise fetching.exception()  # type: ignore[misc]
        finally:
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
            await consumer.stop()
            await producer.stop()

    async def _fetch(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:  # the broker away: lists wait on the topic meanwhile
                log.warning("reason writer: reading lists failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        rec = recommendation_from_json(record.value or b"")
                    except (msgspec.DecodeError, ValueError):
                        self.metrics.upgrades.labels(outcome="unreadable").inc()
                        continue
                    dropped = self.queue.dropped
                    self.queue.put(rec)
                    if self.queue.dropped > dropped:
                        # The oldest list's top items go without an upgrade.
                        self.metrics.upgrades.labels(outcome="dropped").inc(self.upgrader.top_n)
            self.metrics.queue.set(len(self.queue))

    async def _work(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Upgrade the lists whose sentences are known at once; the others wait for the
        model, which a task of its own asks (:class:`UpgradeScheduler`)."""
        asking = asyncio.create_task(self._ask_model(stop))
        refreshed = time.monotonic()
        try:
            while not stop.is_set():
                if asking.done():  # the model task failed: stop loudly
                    asking.result()
                if time.monotonic() - refreshed > CATALOG_REFRESH_S:
                    await self._refresh_catalog()
                    refreshed = time.monotonic()
                lists = self.queue.take(LISTS_PER_ROUND)
                ready, self._answered = self.scheduler.add(lists) + self._answered, []
                dropped, self.scheduler.dropped_items = self.scheduler.dropped_items, 0
                if dropped:  # waiting lists dropped when full: their items get no upgrade
                    self.metrics.upgrades.labels(outcome="dropped").inc(dropped)
                self.metrics.queue.set(len(self.queue) + self.scheduler.waiting)
                if not ready:
                    await asyncio.sleep(0.02)
                    continue
                stats = UpgradeStats()
                upgrades = [
                    self.upgrader.assemble(r, w, self.scheduler.fresh, stats) for r, w in ready
                ]
                self.scheduler.tidy()
                self.metrics.record(stats)
                for upgrade in upgrades:
                    if upgrade is not None:
                        await self._deliver(producer, upgrade)
                await self._save_frames()
        finally:
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)

    async def _ask_model(self, stop: asyncio.Event) -> None:
        """Ask the model for the waiting lists' prompts, newest first, in batches."""
        while not stop.is_set():
            prompts = self.scheduler.next_prompts(self.upgrader.batch_size)
            if not prompts:
                await asyncio.sleep(0.02)
                continue
            stats = UpgradeStats()
            # The model runs in a thread; its answers reach the cache back on the loop.
            answers = await asyncio.to_thread(self.upgrader.generate, prompts, stats)
            self.metrics.model_calls.inc(stats.model_calls)
            self._answered += self.scheduler.answered(answers)

    async def _save_frames(self) -> None:
        learned = self.upgrader.take_learned()
        if self.upgrader.frames and learned:
            await self.store.save_reason_frames(self._model, self.upgrader.language, learned)

    async def _deliver(self, producer: AIOKafkaProducer, upgrade: ReasonUpgrade) -> None:
        now = self.clock_ms()
        message = update_message(upgrade, now)
        await producer.send_and_wait(
            self.settings.topic_reason_updates,
            encode_reason_update(message),
            key=upgrade.user_id.encode(),
        )
        self.metrics.latency.observe(max(0.0, (now - upgrade.list_generated_at) / 1000))
        stored = await self.store.upgrade_stored_reasons(
            upgrade.user_id, upgrade.trigger_event_id, {i.item_id: i.reason for i in upgrade.items}
        )
        if not stored:
            self.metrics.upgrades.labels(outcome="stale").inc(len(upgrade.items))

    async def _load_catalog(self) -> None:
        items, self._catalog_position = await self.store.catalog_snapshot()
        self.upgrader.guard.update([i.title for i in items], [i.category for i in items])
        log.info("reason writer: guard knows %d catalog items", len(items))

    async def _refresh_catalog(self) -> None:
        items, self._catalog_position = await self.store.catalog_changes(self._catalog_position)
        if items:
            self.upgrader.guard.update([i.title for i in items], [i.category for i in items])


def build_writer(
    settings: Settings, registry: CollectorRegistry, complete: CompleteBatch | None = None
) -> ReasonWriter:
    """A writer from the settings; ``complete`` overrides the backend they name."""
    if complete is None:
        from streamrec.stream.worker.reason_backends import build_backend

        # Each request of a batch may take up to 30 s: the writer is off the event path.
        complete = build_backend(settings, timeout_s=30.0).complete_batch
    upgrader = ReasonUpgrader(
        complete,
        Guard(),
        language=settings.reason_language,
        top_n=settings.reason_upgrade_top_n,
        batch_size=settings.reason_upgrade_batch,
        frames=settings.reason_upgrade_frames,
    )
    return ReasonWriter(
        settings, upgrader, RedisStore.from_settings(settings), WriterMetrics(registry)
    )
