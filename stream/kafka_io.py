"""Kafka plumbing outside the Faust app: topic creation, producing, consuming.

Used by the CLI (replay, watch, demo), the tests and the benchmarks. Errors name the
setting to change.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context

from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)


class KafkaUnavailableError(RuntimeError):
    """The configured bootstrap servers do not answer."""


def _unreachable(settings: Settings, exc: BaseException) -> KafkaUnavailableError:
    cause = str(exc) or type(exc).__name__  # a timeout has no message
    msg = (
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({cause}); check "
        "STREAMREC_KAFKA_BOOTSTRAP, STREAMREC_KAFKA_SECURITY_PROTOCOL and that the broker "
        "is running"
    )
    return KafkaUnavailableError(msg)


def _refused(settings: Settings) -> KafkaUnavailableError:
    msg = (
        f"Kafka at {settings.kafka_bootstrap} refused the credentials of user "
        f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}); check "
        "STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD"
    )
    return KafkaUnavailableError(msg)


async def _diagnose(settings: Settings, exc: BaseException) -> KafkaUnavailableError:
    """Why a client could not start: refused credentials (checked with one direct
    connection, since aiokafka reports them only as a failed bootstrap) or unreachable."""
    if settings.kafka_security_protocol.startswith("SASL_"):
        options = client_options(settings)
        host, port = settings.bootstrap_servers[0].rsplit(":", 1)
        try:
            conn = await create_conn(
                host,
                int(port),
                request_timeout_ms=10_000,
                ssl_context=options.get("ssl_context"),
                security_protocol=options["security_protocol"],
                sasl_mechanism=options["sasl_mechanism"],
                sasl_plain_username=options["sasl_plain_username"],
                sasl_plain_password=options["sasl_plain_password"],
            )
            conn.close()
        except SaslAuthenticationFailed:
            return _refused(settings)
        except (KafkaError, OSError, TimeoutError):
            pass
    return _unreachable(settings, exc)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL / SASL_SSL protocols (None for the plain ones)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile),
        certfile=None if settings.kafka_ssl_certfile is None else str(settings.kafka_ssl_certfile),
        keyfile=None if settings.kafka_ssl_keyfile is None else str(settings.kafka_ssl_keyfile),
    )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the bootstrap servers and the security settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": None if password is None else password.get_secret_value(),
        }
    return options


def producer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka producer keyword arguments: :func:`client_options`, every replica's
    acknowledgement, and ``STREAMREC_KAFKA_COMPRESSION``."""
    return {
        **client_options(settings),
        "acks": "all",
        "compression_type": settings.producer_compression,
    }


def topic_specs(settings: Settings, brokers: int) -> list[NewTopic]:
    """The topics streamrec uses, with their partitioning, cleanup policy and replication:
    ``STREAMREC_TOPIC_REPLICATION_FACTOR``, or 3 on a cluster of ``brokers`` (fewer when the
    cluster has fewer brokers)."""
    n = settings.topic_partitions
    rf = settings.topic_replication_factor or max(1, min(3, brokers))
    return [
        NewTopic(settings.topic_events, num_partitions=n, replication_factor=rf),
        NewTopic(
            settings.topic_items,
            num_partitions=1,
            replication_factor=rf,
            topic_configs={"cleanup.policy": "compact"},
        ),
        NewTopic(settings.topic_recommendations, num_partitions=n, replication_factor=rf),
        NewTopic(settings.topic_dlq, num_partitions=1, replication_factor=rf),
        NewTopic(settings.topic_control, num_partitions=1, replication_factor=rf),
        NewTopic(settings.topic_reason_updates, num_partitions=n, replication_factor=rf),
    ]


async def ensure_reachable(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise :class:`KafkaUnavailableError` (naming the setting) unless Kafka answers."""
    admin = AIOKafkaAdminClient(
        **client_options(settings), request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except (KafkaConnectionError, KafkaError, TimeoutError, OSError) as exc:
        raise await _diagnose(settings, exc) from exc
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create any missing streamrec topic; returns the names created.

    Raises:
        KafkaUnavailableError: the brokers do not answer.
        TopicCreationError: the cluster refused a topic (permissions, replication factor,
            a topic policy); no topic after it is attempted.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        await admin.close()
        raise await _diagnose(settings, exc) from exc
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster())["brokers"])
        missing = [t for t in topic_specs(settings, brokers) if t.name not in existing]
        created = []
        for topic in missing:
            response = await admin.create_topics([topic])
            for name, code, message in topic_errors(response):
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:  # another worker was first
                    raise TopicCreationError(name, code, message)
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


class TopicCreationError(RuntimeError):
    """The cluster refused to create a streamrec topic."""

    def __init__(self, topic: str, code: int, message: str | None) -> None:
        error = for_code(code).__name__
        super().__init__(
            f"Kafka refused to create topic {topic!r}: {error} ({code}): "
            f"{message or 'no detail'}. Check STREAMREC_TOPIC_REPLICATION_FACTOR and the "
            "client's permissions, or create the topics yourself (docs/contracts.md lists them)"
        )


def topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    """(topic, error code, message) per topic of a CreateTopics response, any version."""
    rows = getattr(response, "topic_errors", None)
    if rows is None:
        rows = response.topics
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]


@asynccontextmanager
async def producer(settings: Settings, **kwargs: object) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(**producer_options(settings), **kwargs)
    try:
        await prod.start()
    except (KafkaConnectionError, OSError) as exc:
        await prod.stop()
        raise await _diagnose(settings, exc) from exc
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
        **client_options(settings),
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
    )
    try:
        await cons.start()
    except (KafkaConnectionError, OSError) as exc:
        await cons.stop()
        raise await _diagnose(settings, exc) from exc
    try:
        yield cons
    finally:
        await cons.stop()
