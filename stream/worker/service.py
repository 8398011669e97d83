"""Assemble and run a worker: settings -> model, index, Redis, metrics -> catalog -> Faust."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from streamrec.engine.serving.catalog import Catalog
from streamrec.engine.serving.model import ItemModel, ModelError
from streamrec.engine.serving.recommender import Recommender
from streamrec.engine.serving.text_encoders import TextEncoderError
from streamrec.index.device import choose_device, set_cpu_threads
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.kafka_io import client_options, ensure_topics
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.redis_store.catalog import PUBLISH_CATALOG_COMMAND
from streamrec.stream.settings import Settings
from streamrec.stream.worker.app import create_app
from streamrec.stream.worker.catalog_restore import CatalogReadiness, restore_catalog
from streamrec.stream.worker.health import serve as serve_metrics
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.params import ranking_params
from streamrec.stream.worker.pipeline import Pipeline

log = logging.getLogger(__name__)


class ConfigurationError(RuntimeError):
    """A setting points at something that is not there; the message names the setting."""


def load_recommender(settings: Settings) -> Recommender:
    """Load the trained model and its index from ``STREAMREC_MODEL_DIR``."""
    model_dir = settings.model_dir
    if not (model_dir / "model.json").is_file():
        msg = (
            f"no trained model in {model_dir.resolve()} (model.json missing): run "
            "`streamrec train` and `streamrec index build`, or set STREAMREC_MODEL_DIR"
        )
        raise ConfigurationError(msg)
    try:
        model = ItemModel.load(model_dir)
        if model.content is not None and model.content.features != "hashing":
            # Load the packaged sentence encoder now, not on the first new catalog item.
            model.content.encode("", "", [], "")
    except (ModelError, TextEncoderError) as exc:
        msg = f"cannot load the model in {model_dir.resolve()} (STREAMREC_MODEL_DIR): {exc}"
        raise ConfigurationError(msg) from exc
    device = choose_device(settings.device)
    set_cpu_threads(settings.faiss_threads)
    if not (settings.index_dir / "items.ids.json").is_file():
        msg = (
            f"no index in {settings.index_dir.resolve()}: run "
            f"`streamrec index build --model-dir {model_dir}`"
        )
        raise ConfigurationError(msg)
    index = FaissItemIndex.load(settings.index_dir, device)
    log.info(
        "loaded model %s (%d items, d=%d) and %s index on %s",
        model.version,
        len(model.item_ids),
        index.dim,
        index.factory,
        device.kind,
    )
    return Recommender(model, index, Catalog(), ranking_params(settings))


def build_pipeline(settings: Settings, registry: CollectorRegistry) -> Pipeline:
    metrics = Metrics(registry)
    store = RedisStore.from_settings(
        settings,
        on_error=lambda op, exc: metrics.redis_errors.labels(op=op).inc(),
        on_stats_error=lambda op: metrics.item_stats_errors.labels(op=op).inc(),
    )
    device = choose_device(settings.device)
    return Pipeline(
        settings,
        load_recommender(settings),
        store,
        metrics,
        index_loader=lambda: FaissItemIndex.load(settings.index_dir, device),
        # An experiment variant's model_dir: its model and index, like the worker's own.
        model_loader=lambda folder: load_recommender(
            settings.model_copy(update={"model_dir": folder})
        ),
    )


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT/SIGTERM."""
    registry = CollectorRegistry()
    pipeline = build_pipeline(settings, registry)  # fails fast on a missing model or index
    asyncio.run(ensure_topics(settings))
    readiness = CatalogReadiness(settings.topic_items, pipeline.metrics)
    if settings.metrics_port:
        try:
            serve_metrics(settings.metrics_host, settings.metrics_port, registry, readiness.report)
        except OSError as exc:  # taken, or no such address here
            msg = (
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
                f"({exc.strerror or exc}); check STREAMREC_METRICS_HOST and STREAMREC_METRICS_PORT"
            )
            raise ConfigurationError(msg) from exc
        log.info(
            "metrics on %s:%d/metrics, readiness on /readyz",
            settings.metrics_host,
            settings.metrics_port,
        )
    # Catalog first, then events: Faust (and the consumer group) starts once caught up.
    asyncio.run(restore_catalog(settings, readiness))
    asyncio.run(warn_if_catalog_empty(settings))
    app = create_app(settings, pipeline)
    make_worker(app, settings.log_level).execute_from_commandline()


#: How long the start-up catalog check may take before it is skipped.
CATALOG_CHECK_TIMEOUT_S = 10.0


async def empty_catalog_warning(settings: Settings) -> str | None:
    """What to tell the operator when this worker would start with no catalog: none in
    Redis and nothing on the items topic that its consumer group has not consumed yet
    (every event would then be dead-lettered as ``unknown_item``); None otherwise."""
    store = RedisStore.from_settings(settings)
    try:
        stored = await store.catalog_size()
    finally:
        await store.close()
    if stored:
        return None
    unread = await unread_messages(settings, settings.topic_items)
    if unread:
        log.info(
            "catalog: none in Redis yet, %d messages to read on %s", unread, settings.topic_items
        )
        return None
    return (
        "the catalog is empty: no item in Redis and nothing to read on topic "
        f"{settings.topic_items!r} (STREAMREC_TOPIC_ITEMS), so every event will be "
        "dead-lettered as unknown_item until a catalog is published, e.g. with "
        f"`{PUBLISH_CATALOG_COMMAND}`"
    )


async def warn_if_catalog_empty(settings: Settings) -> str | None:
    """Log :func:`empty_catalog_warning` as a WARNING, if any, and return it. A check that
    cannot finish in :data:`CATALOG_CHECK_TIMEOUT_S` is skipped: it never stops a start."""
    try:
        warning = await asyncio.wait_for(
            empty_catalog_warning(settings), timeout=CATALOG_CHECK_TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - a warning's check: report, never stop the start
        log.info("catalog check skipped (%s)", type(exc).__name__)
        return None
    if warning is not None:
        log.warning("%s", warning)
    return warning


async def unread_messages(settings: Settings, topic: str) -> int:
    """Messages on ``topic`` after the offsets committed by the worker's consumer group
    (``STREAMREC_APP_ID``; from the topic's start where it committed none, or where its
    offsets cannot be read: a catalog is then rather taken as unread than as missing)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
        partitions = [
            TopicPartition(topic, p["partition"])
            for t in await admin.describe_topics([topic])
            for p in t["partitions"]
        ]
        if not partitions:
            return 0
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        try:
            committed = await admin.list_consumer_group_offsets(
                settings.app_id, partitions=partitions
            )
        except KafkaError:  # no group coordinator yet (a new cluster): nothing committed
            committed = {}
        unread = 0
        for tp in partitions:
            done = committed[tp].offset if tp in committed else -1
            unread += max(0, ends[tp] - max(starts[tp], done))
        return unread
    finally:
        await consumer.stop()
        await admin.close()


def make_worker(app: faust.App, log_level: str) -> faust.Worker:
    """Faust's worker for ``app``, logging at ``log_level``, without the terminal spinner.

    At WARNING or above, Faust's worker hangs its spinner's handler on the root logger and
    sets the root to DEBUG, so every debug record of aiokafka and Faust (several per fetch
    and produce request) would be built and then dropped: 2% of the worker's samples in a
    profile at 200 events/s.
    """
    worker = faust.Worker(app, loglevel=log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker


def model_exists(model_dir: Path) -> bool:
    return (model_dir / "model.json").is_file() and (
        model_dir / "index" / "items.ids.json"
    ).is_file()
