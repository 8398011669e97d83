"""The Faust app: topics and thin agents around :class:`stream.pipeline.Pipeline`.

Events are keyed by user_id, so one user's events are processed in order by one worker;
several workers share partitions through the consumer group ``STREAMREC_APP_ID``.
Offsets are committed only after a batch's recommendations and dead letters are
acknowledged by Kafka (at-least-once; user-state updates are idempotent per event_id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import faust

from stream.pipeline import Outgoing, Pipeline, RawMessage
from stream.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, pipeline: Pipeline) -> faust.App:
    """Build the Faust app with its topics, agents and catalog timer."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap_servers],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=settings.batch_size,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_size, 256),
        logging_config=None,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events = app.topic(settings.topic_events, **raw)
    items = app.topic(settings.topic_items, **raw)
    recommendations = app.topic(settings.topic_recommendations, **raw)
    dlq = app.topic(settings.topic_dlq, **raw)
    within = settings.batch_within_ms / 1000.0

    async def publish(topic: faust.TopicT, messages: Sequence[Outgoing]) -> None:
        futures = [await topic.send(key=m.key, value=m.value) for m in messages]
        if futures:
            await asyncio.gather(*futures)

    @app.agent(events, name="process_events")
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=within
        ):
            result = await pipeline.handle_events([_raw(e) for e in batch])
            await publish(recommendations, result.recommendations)
            await publish(dlq, result.dead_letters)
            pipeline.record_published(result)

    @app.agent(items, name="process_items")
    async def process_items(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=within
        ):
            dead = await pipeline.handle_items([_raw(e) for e in batch])
            await publish(dlq, dead)

    @app.timer(settings.catalog_sync_interval_s)  # type: ignore[untyped-decorator]
    async def follow_catalog() -> None:
        await pipeline.sync_catalog()

    if settings.index_reload_interval_s > 0:

        @app.timer(settings.index_reload_interval_s)  # type: ignore[untyped-decorator]
        async def follow_index() -> None:
            await pipeline.reload_index()

    return app


def _raw(event: faust.EventT[Any]) -> RawMessage:
    msg = event.message
    value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
    key = msg.key if isinstance(msg.key, bytes | type(None)) else bytes(msg.key)
    return RawMessage(value, key, msg.topic, msg.partition, msg.offset)
