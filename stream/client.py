"""Client helpers for other services: send events, read recommendations.

Producers validate every event against the contract before it leaves (a bad event raises
:class:`streamrec.stream.contracts.InvalidMessage` in the caller, it never reaches the DLQ), key it
by
``user_id`` and wait for Kafka's acknowledgement. The consumer yields typed
:class:`streamrec.engine.types.Recommendation` values. Both use the ``STREAMREC_`` settings (topics,
bootstrap servers, SASL/TLS), or explicit ones.

    from streamrec.stream.client import EventProducer, recommendations

    with EventProducer() as events:
        events.send(user_id="u1", item_id="sku-9", type="view")

    async with contextlib.aclosing(recommendations(group_id="my-service")) as recs:
        async for rec in recs:  # aclosing: leaving the loop early closes the consumer
            print(rec.user_id, [(i.item_id, i.reason) for i in rec.items])
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer

from streamrec.engine.types import Event, Recommendation
from streamrec.stream.contracts import decode_event, encode_event, recommendation_from_json
from streamrec.stream.kafka_io import consumer, producer_options
from streamrec.stream.settings import Settings

__all__ = ["AsyncEventProducer", "EventProducer", "recommendations"]


def _event(
    settings: Settings,
    user_id: str,
    item_id: str,
    type: str,  # noqa: A002 - the contract's field name
    ts: int | None,
    event_id: str | None,
    context: Mapping[str, Any] | None,
) -> Event:
    """Build and validate one event exactly as a worker will decode it."""
    now = time.time_ns() // 1_000_000
    body = Event(
        event_id or uuid.uuid4().hex,
        user_id,
        item_id,
        type,  # type: ignore[arg-type]
        now if ts is None else ts,
        None if context is None else dict(context),
    )
    return decode_event(encode_event(body), max_bytes=settings.max_message_bytes, now_ms=now)


class AsyncEventProducer:
    """``async with AsyncEventProducer() as p: await p.send(user_id=..., item_id=..., type=...)``"""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Self:
        self._producer = AIOKafkaProducer(
            **producer_options(self.settings), enable_idempotence=True
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        *,
        user_id: str,
        item_id: str,
        type: str,  # noqa: A002 - the contract's field name
        ts: int | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Event:
        """Validate, send and wait for the broker's acknowledgement; returns the event sent
        (``event_id`` generated when not given, ``ts`` now when not given).

        Raises:
            streamrec.stream.contracts.InvalidMessage: the event breaks the contract.
            RuntimeError: used outside ``async with``.
        """
        if self._producer is None:
            msg = "use AsyncEventProducer inside `async with`"
            raise RuntimeError(msg)
        event = _event(self.settings, user_id, item_id, type, ts, event_id, context)
        await self._producer.send_and_wait(
            self.settings.topic_events, encode_event(event), key=user_id.encode()
        )
        return event


class EventProducer:
    """The blocking twin of :class:`AsyncEventProducer`, for code without an event loop:
    ``with EventProducer() as p: p.send(user_id=..., item_id=..., type=...)``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._async = AsyncEventProducer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._async.__aenter__())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._call(self._async.__aexit__(kind, exc, tb))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def send(self, **fields: Any) -> Event:
        """See :meth:`AsyncEventProducer.send`."""
        event: Event = self._call(self._async.send(**fields))
        return event

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def recommendations(
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
) -> AsyncIterator[Recommendation]:
    """Yield each published recommendation list as a typed value.

    Args:
        settings: Topics and connection (default: from the environment).
        group_id: A consumer group to share the lists among instances and remember the
            position; None reads without committing.
        from_beginning: Start at the oldest kept list instead of the next one.
    """
    settings = settings or Settings()
    async with consumer(
        settings,
        [settings.topic_recommendations],
        from_beginning=from_beginning,
        group_id=group_id,
    ) as cons:
        async for record in cons:
            if record.value is not None:
                yield recommendation_from_json(record.value)
