"""The transport floor: a Faust worker configured like ours that only decodes and publishes.

What a worker costs before it does any work of its own: the same Faust app settings as
``streamrec.stream.worker.app.create_app`` (consumer group, ``take_events`` micro-batches of
``STREAMREC_BATCH_SIZE`` within ``STREAMREC_BATCH_WITHIN_MS``, raw byte topics, read-committed
consumer, ``acks=all``, commits every batch size or second after the agent is done with
a batch, the same fetch-ahead buffer), the same straight-to-producer publish, and per event
only our contract decoder (:func:`streamrec.stream.contracts.decode_event`) and one fixed
recommendation-shaped JSON list of about 2.5 KB (ten items with reasons and evidence),
carrying the event's user and id so that the load generator can match it. No Redis, no
ranking, no item or control agents, no metrics.

``benchmarks/e2e.py --configs floor,batched`` runs it next to the real worker on the same
broker and events and reports worker CPU per event against it. It reads the same
``STREAMREC_*`` settings as ``streamrec worker``:

    STREAMREC_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/floor.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import faust
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrec.engine.types import Recommendation, RecommendedItem  # noqa: E402
from streamrec.stream.contracts import (  # noqa: E402
    InvalidMessage,
    decode_event,
    encode_recommendation,
    recommendation_to_dict,
)
from streamrec.stream.kafka_io import ensure_topics  # noqa: E402
from streamrec.stream.settings import Settings  # noqa: E402
from streamrec.stream.worker.faust_transport import ReadCommittedTransport  # noqa: E402

log = logging.getLogger("streamrec.floor")

_TITLES = (
    "Star Wars (1977)",
    "Return of the Jedi (1983)",
    "Raiders of the Lost Ark (1981)",
    "The Empire Strikes Back (1980)",
    "Indiana Jones and the Last Crusade (1989)",
    "Back to the Future (1985)",
    "Terminator 2: Judgment Day (1991)",
    "The Fugitive (1993)",
    "Alien (1979)",
    "Jurassic Park (1993)",
    "Men in Black (1997)",
    "The Princess Bride (1987)",
)


#: Padding for the reasons, so that the list reaches the size asked for.
_FILLER = " and it is often watched together with the films you rated highly lately" * 40


def fixed_list(target_bytes: int = 2500) -> Recommendation:
    """A recommendation shaped like the worker's for MovieLens: ten items, each with a
    reason sentence naming a title and the evidence behind it, its reasons padded so that
    its JSON is about ``target_bytes`` (never less than about 2 KB)."""

    def build(pad: int) -> Recommendation:
        items = tuple(
            RecommendedItem(
                item_id=str(100 + n),
                rank=n + 1,
                score=1.8738003724578525 - n * 0.0371234,
                reason=f"Picked because you viewed {_TITLES[n % 12]}" + _FILLER[:pad],
                reason_code="similar_to_recent",
                evidence={"items": [{"item_id": str(n), "title": _TITLES[n % 12]}]},
            )
            for n in range(10)
        )
        return Recommendation("u", "e", 0, "floor-model", items)

    base = len(encode_recommendation(build(0)))
    return build(max(0, (target_bytes - base) // 10))


class FloorList:
    """The fixed list's JSON with one event's user id, event id and time put in: the
    fields in the order of :func:`streamrec.stream.contracts.recommendation_to_dict`, the
    items encoded once."""

    def __init__(self, target_bytes: int = 2500) -> None:
        rec = fixed_list(target_bytes)
        self._encode = msgspec.json.Encoder().encode
        self.head = b'{"recommendation_id":"r-floor","experiment":null,"variant":null'
        self.tail = b"".join(
            (
                b',"model_version":',
                self._encode(rec.model_version),
                b',"items":',
                self._encode(recommendation_to_dict(rec)["items"]),
                b"}",
            )
        )

    def __call__(self, user_id: str, event_id: str, now_ms: int) -> bytes:
        return b"".join(
            (
                self.head,
                b',"user_id":',
                self._encode(user_id),
                b',"trigger_event_id":',
                self._encode(event_id),
                b',"generated_at":',
                str(now_ms).encode(),
                self.tail,
            )
        )


def create_floor_app(settings: Settings, list_bytes: int = 2500) -> faust.App:
    """The Faust app of ``create_app`` (same settings) with one agent: decode each event
    and publish a fixed list of about ``list_bytes`` for it."""
    datadir = Path(tempfile.gettempdir()) / "streamrec-faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(  # as streamrec.stream.worker.app.create_app (tests/benchmarks check)
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
        broker_commit_interval=1.0,
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
    recommendations = app.topic(settings.topic_recommendations, **raw)
    within = settings.batch_within_ms / 1000.0
    make_list = FloorList(list_bytes)
    max_bytes = settings.max_message_bytes

    async def publish(messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        """As create_app's publish: straight to the producer, wait for acks=all."""
        if not messages:
            return
        name = recommendations.get_topic_name()
        futures = [
            await app.producer.send(name, key, value, partition=None, timestamp=None, headers=None)
            for key, value in messages
        ]
        await asyncio.gather(*futures)

    @app.agent(events, name="process_events")
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            settings.batch_size, within=within
        ):
            now = time.time_ns() // 1_000_000
            out: list[tuple[bytes | None, bytes]] = []
            for e in batch:
                value = e.message.value
                try:
                    event = decode_event(
                        value if isinstance(value, bytes) else bytes(value or b""),
                        max_bytes=max_bytes,
                        now_ms=now,
                    )
                except InvalidMessage:
                    continue  # the floor has no dead-letter topic
                out.append((event.user_id.encode(), make_list(event.user_id, event.event_id, now)))
            await publish(out)

    return app


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--list-bytes", type=int, default=2500, help="size of the published list (JSON bytes)"
    )
    args = parser.parse_args()
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(ensure_topics(settings))
    log.warning(
        "floor worker: %s -> %s, a fixed list of %d bytes per event",
        settings.topic_events,
        settings.topic_recommendations,
        len(FloorList(args.list_bytes)("u", "e", 0)),
    )
    app = create_floor_app(settings, args.list_bytes)
    # As streamrec.stream.worker.service.make_worker: quiet, and no spinner (with one,
    # Faust sets the root logger to DEBUG and every debug record is built and dropped).
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    # Faust's worker parses sys.argv as its own command line: leave it only the program.
    sys.argv = sys.argv[:1]
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
