"""The Faust app: topics and thin agents around :class:`streamrec.stream.worker.pipeline.Pipeline`.

Events are keyed by user_id, so one user's events are processed in order by one worker;
several workers share partitions through the consumer group ``STREAMREC_APP_ID``.
Offsets are committed only after a batch's recommendations and dead letters are
acknowledged by Kafka (at-least-once; user-state updates are idempotent per event_id).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import faust

from streamrec.stream.kafka_io import ssl_context
from streamrec.stream.settings import Settings
from streamrec.stream.worker.faust_transport import ReadCommittedTransport
from streamrec.stream.worker.pipeline import Outgoing, Pipeline, RawMessage

log = logging.getLogger(__name__)

#: How often the consumer lag is exported when no batch arrives.
LAG_INTERVAL_S = 5.0
#: The shortest batch window of the item and control agents. Faust's ``take_events`` wakes
#: every window even with nothing to take, and at the events' 5 ms three agents kept an
#: idle worker at 9% of a core; item and forget requests do not need 5 ms.
SIDE_TOPIC_WITHIN_S = 0.1


def create_app(settings: Settings, pipeline: Pipeline) -> faust.App:
    """Build the Faust app with its topics, agents and catalog timer."""
    # Faust wants a data folder even with in-memory tables: keep it out of the cwd.
    datadir = Path(tempfile.gettempdir()) / "streamrec-faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
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
        producer_compression_type=settings.producer_compression,
        broker_commit_every=settings.batch_size,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        datadir=str(datadir),
        broker_credentials=_credentials(settings),
        broker_commit_interval=1.0,
        # Events fetched ahead of the agent. Faust stops fetching a partition when this
        # queue is nearly full and fetches it again only once it has drained, so a small
        # queue left a worker that fell behind idle between batches (at 4 * batch_size:
        # 25 ms of waiting per batch and a quarter of a core unused at 400 events/s; see
        # docs/benchmarks.md). Queued events are not in processing yet: a
        # stopping worker does not wait for them, and they are not committed.
        stream_buffer_maxsize=max(64 * settings.batch_size, 4096),
        logging_config=None,
    )
    app.transport = ReadCommittedTransport(
        app.conf.broker_consumer, app, drain_s=settings.shutdown_drain_s
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
    control = app.topic(settings.topic_control, **raw)
    within = settings.batch_within_ms / 1000.0
    side_within = max(within, SIDE_TOPIC_WITHIN_S)

    async def publish(topic: faust.TopicT, messages: Sequence[Outgoing]) -> None:
        """Send a batch's messages and wait until the broker has them all (acks=all).

        Straight to the producer: Faust's ``Topic.send`` adds a message object, a
        callback and a buffered task per message, which took about 40% of the publish
        time of a batch (docs/benchmarks.md). Same producer, so the same
        partitioner (by key) and the same acknowledgements."""
        if not messages:
            return
        name = topic.get_topic_name()
        futures = [
            await app.producer.send(
                name, m.key, m.value, partition=None, timestamp=None, headers=None
            )
            for m in messages
        ]
        await asyncio.gather(*futures)

    processed: dict[int, int] = {}  # last processed offset per events partition

    def export_lag() -> None:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.topic_events]
        ends: dict[int, int | None] = {}
        for tp in assigned:
            try:
                ends[tp.partition] = app.consumer.highwater(tp)
            except (AssertionError, KeyError, TypeError):  # no fetch on it yet
                ends[tp.partition] = None
        pipeline.record_lag(processed, ends)

    @app.agent(events, name="process_events")
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=within
        ):
            result = await pipeline.handle_events([_raw(e) for e in batch])
            await publish(recommendations, result.recommendations)
            await publish(dlq, result.dead_letters)
            pipeline.record_published(result)
            for e in batch:
                p = e.message.partition
                processed[p] = max(processed.get(p, -1), e.message.offset)
            export_lag()

    @app.timer(LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def follow_lag() -> None:
        export_lag()  # also while no batch comes (idle, or stuck)

    @app.agent(items, name="process_items")
    async def process_items(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=side_within
        ):
            dead = await pipeline.handle_items([_raw(e) for e in batch])
            await publish(dlq, dead)

    @app.agent(control, name="process_control")
    async def process_control(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=side_within
        ):
            await publish(dlq, await pipeline.handle_control([_raw(e) for e in batch]))

    @app.timer(settings.catalog_sync_interval_s)  # type: ignore[untyped-decorator]
    async def follow_catalog() -> None:
        await pipeline.sync_catalog()

    if settings.experiments_file is not None:

        @app.timer(settings.experiment_refresh_s)  # type: ignore[untyped-decorator]
        async def follow_experiment() -> None:
            await pipeline.refresh_experiment()

    if settings.index_reload_interval_s > 0:

        @app.timer(settings.index_reload_interval_s)  # type: ignore[untyped-decorator]
        async def follow_index() -> None:
            await pipeline.reload_index()

    return app


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (None: plaintext)."""
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _raw(event: faust.EventT[Any]) -> RawMessage:
    msg = event.message
    value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
    key = msg.key if isinstance(msg.key, bytes | type(None)) else bytes(msg.key)
    return RawMessage(value, key, msg.topic, msg.partition, msg.offset)
