"""Type aliases, value types and the exception tree shared by :mod:`streamrec.engine.reasons`.

Exceptions::

    ReasonError                              root of everything raised here
    ├── UnknownReasonCodeError (ValueError)  a reason code no template knows
    └── GenerationError                      a language-model backend gave no usable text
        └── GenerationTimeoutError (TimeoutError)   ...because it ran out of time
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Language = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = get_args(Language)

ReasonCode = Literal[
    "similar_to_recent",
    "bought_together",
    "category_affinity",
    "tag_affinity",
    "viewed_together",
    "new_arrival",
    "trending",
    "popular",
]
REASON_CODES: tuple[str, ...] = get_args(ReasonCode)

Evidence = Mapping[str, Any]
"""The facts behind one reason, as published in a recommendation's ``evidence`` field."""


class ReasonError(Exception):
    """Root of the errors raised by :mod:`streamrec.engine.reasons`."""


class UnknownReasonCodeError(ReasonError, ValueError):
    """A reason code that no template knows."""


class GenerationError(ReasonError):
    """A language-model backend produced no usable text (transport error, bad status)."""


class GenerationTimeoutError(GenerationError, TimeoutError):
    """A language-model backend did not answer within its time limit."""


@dataclass(frozen=True)
class ReasonRequest:
    """One sentence to write: a reason code and its evidence, for one recommended item.

    Attributes:
        code: the reason code (see :data:`REASON_CODES`).
        evidence: the facts the sentence may use, and nothing else.
        language: output language.
        item_id: the recommended item; picks the phrasing deterministically.
        user_id: the user the list is for; a sentence naming it is rejected.
        list_id: requests with the same ``list_id`` form one list, in which no sentence
            repeats (e.g. the triggering event id).
    """

    code: str
    evidence: Evidence
    language: Language = "en"
    item_id: str = ""
    user_id: str | None = None
    list_id: str = ""
