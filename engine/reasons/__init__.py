"""Reasons: the evidence behind each recommended item, and the sentence shown for it.

Evidence is computed from the same numbers that ranked the item; every sentence is
written from the evidence alone, by templates or by a language model whose output must
pass the faithfulness guard.

Reason codes:
    similar_to_recent   the item is close to specific recent items of the user
    bought_together     shoppers bought it together with an item of the user's session
    category_affinity   the item is in a category the user interacted with repeatedly
    tag_affinity        the item shares a tag with several recent items of the user
    viewed_together     shoppers viewed it together with an item of the user's session
    new_arrival         a cold-start item (indexed from its content) matching the user
    trending            many recent events (time-decayed count,
    :mod:`streamrec.engine.serving.item_stats`)
    popular             fallback for users without history, said as such

Modules: :mod:`.evidence` (choosing code and evidence), :mod:`.templates` and
:mod:`.phrases` (sentences, English and Chinese), :mod:`.guard` (faithfulness check),
:mod:`.prompt` (language-model instructions), :mod:`.generator` (the guarded, cached,
time-bounded language-model writer), :mod:`.metrics` (faithfulness, specificity and
diversity measures for the evaluation, docs/reasons.md). Errors (``_types``)::

    ReasonError
    ├── UnknownReasonCodeError (ValueError)
    └── GenerationError
        └── GenerationTimeoutError (TimeoutError)
"""

from __future__ import annotations

from streamrec.engine.reasons._types import (
    LANGUAGES,
    REASON_CODES,
    Evidence,
    GenerationError,
    GenerationTimeoutError,
    Language,
    ReasonCode,
    ReasonError,
    ReasonRequest,
    UnknownReasonCodeError,
)
from streamrec.engine.reasons.evidence import (
    CitableHistory,
    Reason,
    ReasonParams,
    SessionPartners,
    build_reason,
    category_counts,
    tag_counts,
    trend_evidence,
)
from streamrec.engine.reasons.generator import (
    Complete,
    LMReasonWriter,
    ReasonGenerator,
    WriterStats,
    WrittenReasons,
    evidence_signature,
)
from streamrec.engine.reasons.guard import Guard, GuardResult, check
from streamrec.engine.reasons.prompt import Prompt, build_prompt
from streamrec.engine.reasons.templates import TemplateGenerator, render

__all__ = [
    "LANGUAGES",
    "REASON_CODES",
    "CitableHistory",
    "Complete",
    "Evidence",
    "GenerationError",
    "GenerationTimeoutError",
    "Guard",
    "GuardResult",
    "LMReasonWriter",
    "Language",
    "Prompt",
    "Reason",
    "ReasonCode",
    "ReasonError",
    "ReasonGenerator",
    "ReasonParams",
    "ReasonRequest",
    "SessionPartners",
    "TemplateGenerator",
    "UnknownReasonCodeError",
    "WriterStats",
    "WrittenReasons",
    "build_prompt",
    "build_reason",
    "category_counts",
    "check",
    "evidence_signature",
    "render",
    "tag_counts",
    "trend_evidence",
]
