"""What another service needs to talk to streamrec: send events, read recommendations.

Needs only the base install (aiokafka, msgspec, pydantic-settings)::

    from streamrec.client import EventProducer, recommendations

    with EventProducer() as events:
        events.send(user_id="u1", item_id="sku-9", type="view")

See :mod:`streamrec.stream.client` for the details and the message contracts in
:mod:`streamrec.stream.contracts`.
"""

from __future__ import annotations

from streamrec.engine.types import Event, Recommendation, RecommendedItem
from streamrec.stream.client import AsyncEventProducer, EventProducer, recommendations
from streamrec.stream.contracts import InvalidMessage
from streamrec.stream.settings import Settings

__all__ = [
    "AsyncEventProducer",
    "Event",
    "EventProducer",
    "InvalidMessage",
    "Recommendation",
    "RecommendedItem",
    "Settings",
    "recommendations",
]
