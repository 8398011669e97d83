"""Language-model reason sentences: guarded, cached, within a time budget, never missing.

:class:`LMReasonWriter` asks an injected backend (a plain callable, see :data:`Complete`;
the HTTP and transformers backends live in ``stream/worker/reason_backends.py``) for one
sentence per request, in order, while time is left before the deadline. Every answer
passes :class:`~streamrec.engine.reasons.guard.Guard` or is replaced by the template sentence, so
the result always has one faithful sentence per request. Outcomes per request::

    generated         the model's sentence, written in time and accepted by the guard
    cached            a sentence accepted earlier for the same evidence signature
    fallback_timeout  no time left, the backend timed out, or answered after the deadline
                      (an accepted late answer is cached for next time)
    fallback_error    the backend raised, or returned nothing usable
    fallback_guard    the guard rejected the answer (now, or earlier for this signature)

The writer is synchronous and does no I/O itself; run it where blocking is fine (the
ranking thread), with a deadline that bounds the whole batch.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamrec.engine.reasons._types import GenerationTimeoutError, Language, ReasonRequest
from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.prompt import Prompt, build_prompt
from streamrec.engine.reasons.templates import TemplateGenerator

Complete = Callable[[Prompt, float], str | None]
"""A backend: (prompt, timeout in seconds) -> the model's text, or None when the answer was
unusable. It raises :class:`GenerationTimeoutError` when out of time and
:class:`~streamrec.engine.reasons.GenerationError` (or anything else) when it failed."""

CompleteBatch = Callable[[Sequence[Prompt], float], list[str | None]]
"""A batched backend: (prompts, timeout in seconds for the whole batch) -> one answer per
prompt, in order: the model's text, or None when that prompt's answer was unusable (or, for
backends that answer prompts separately, its call failed). An empty batch gives []. It
raises :class:`GenerationTimeoutError` when out of time with no answer to give, and
:class:`~streamrec.engine.reasons.GenerationError` (or anything else) when the whole batch
failed. Not used by :class:`LMReasonWriter`, which asks :data:`Complete` one prompt at a
time."""

OUTCOMES = ("generated", "cached", "fallback_timeout", "fallback_error", "fallback_guard")


class ReasonGenerator(Protocol):
    """Anything that writes reason sentences: one entry per request, None where it has no
    sentence (the caller keeps the reason's default text)."""

    def generate(self, items: Sequence[ReasonRequest]) -> list[str | None]: ...


@dataclass
class WriterStats:
    """How each request of a batch was answered (see the module docstring)."""

    generated: int = 0
    cached: int = 0
    fallback_timeout: int = 0
    fallback_error: int = 0
    fallback_guard: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    """Guard violation kinds seen in this batch (e.g. {"number": 2})."""

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def as_dict(self) -> dict[str, int]:
        """The five outcome counts, e.g. for metrics labelled by outcome."""
        return {outcome: int(getattr(self, outcome)) for outcome in OUTCOMES}


@dataclass(frozen=True)
class WrittenReasons:
    """One sentence and its outcome per request, and the batch's counts."""

    texts: list[str]
    outcomes: list[str]
    stats: WriterStats


def evidence_signature(code: str, evidence: object, language: str) -> str:
    """A stable hash of (code, evidence, language): equal facts, equal signature.

    Example:
        >>> a = evidence_signature("popular", {"interactions": 3, "user_history": 0}, "en")
        >>> a == evidence_signature("popular", {"user_history": 0, "interactions": 3}, "en")
        True
    """
    payload = json.dumps(
        [code, evidence, language], sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


class LMReasonWriter:
    """Writes reasons with a language model, falling back to templates.

    Args:
        complete: the backend (see :data:`Complete`).
        guard: checks each answer; build it with the catalog's titles and categories.
        call_timeout_s: the most one backend call may take (also bounded by the time
            left before the deadline).
        budget_s: the time budget :meth:`generate` gives a batch.
        clock: monotonic seconds (``time.monotonic``); deadlines are on this clock.
        cache_size: sentences (and rejections) remembered, least recently used dropped.

    Example:
        >>> writer = LMReasonWriter(lambda prompt, timeout: "Popular with other users",
        ...                         Guard())
        >>> ev = {"interactions": 7, "user_history": 2}
        >>> writer.write([ReasonRequest("popular", ev)], deadline=time.monotonic() + 1).outcomes
        ['generated']
    """

    def __init__(
        self,
        complete: Complete,
        guard: Guard,
        *,
        call_timeout_s: float = 2.0,
        budget_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 10_000,
        on_miss: Callable[[ReasonRequest], None] | None = None,
    ) -> None:
        self.complete = complete
        self.guard = guard
        self.call_timeout_s = call_timeout_s
        self.budget_s = budget_s
        self.clock = clock
        self.cache_size = cache_size
        self.on_miss = on_miss
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()  # the cache is shared with a warming thread
        self._templates: dict[Language, TemplateGenerator] = {}

    def generate(self, items: Sequence[ReasonRequest]) -> list[str | None]:
        """:class:`ReasonGenerator` interface, with a deadline ``budget_s`` from now."""
        return list(self.write(items, deadline=self.clock() + self.budget_s).texts)

    def write(self, items: Sequence[ReasonRequest], *, deadline: float) -> WrittenReasons:
        """One faithful sentence per request, model-written where time and guard allow.

        Requests are answered in order; once the deadline has passed, the rest fall back
        at once (and go to ``on_miss``, if given, to be written later by :meth:`warm`).

        Args:
            items: the requests, grouped into lists by ``list_id``.
            deadline: ``clock()`` time after which no backend call starts and late answers
                are not used.

        Returns:
            Sentences, outcomes and counts, in request order. No sentence repeats within
            a list: a model sentence equal to another item's sentence is replaced by the
            item's template sentence (the outcome stays as counted).
        """
        stats = WriterStats()
        fallbacks = self._fallbacks(items)
        texts: list[str | None] = []
        outcomes: list[str] = []
        for item in items:
            key = evidence_signature(item.code, item.evidence, item.language)
            text, outcome = self._cached(key)
            if outcome is None:
                left = deadline - self.clock()
                text, outcome = self._ask(item, key, min(self.call_timeout_s, left), stats)
                if outcome == "generated" and self.clock() > deadline:
                    text, outcome = None, "fallback_timeout"  # cached for next time
                if outcome == "fallback_timeout" and self.on_miss is not None:
                    self.on_miss(item)
            stats.count(outcome)
            texts.append(text)
            outcomes.append(outcome)
        return WrittenReasons(_unique(items, texts, fallbacks), outcomes, stats)

    def warm(self, item: ReasonRequest) -> str:
        """Write and cache one request's sentence with the full call timeout, outside any
        batch (e.g. in a background thread); returns the outcome."""
        key = evidence_signature(item.code, item.evidence, item.language)
        _, outcome = self._cached(key)
        if outcome is not None:
            return outcome
        return self._ask(item, key, self.call_timeout_s, WriterStats())[1]

    def _cached(self, key: str) -> tuple[str | None, str | None]:
        with self._lock:
            if key not in self._cache:
                return None, None
            self._cache.move_to_end(key)
            text = self._cache[key]
        return (text, "cached") if text is not None else (None, "fallback_guard")

    def _ask(
        self, item: ReasonRequest, key: str, timeout_s: float, stats: WriterStats
    ) -> tuple[str | None, str]:
        if timeout_s <= 0:
            return None, "fallback_timeout"
        prompt = build_prompt(
            item.code, item.evidence, item.language, max_chars=self.guard.max_chars
        )
        try:
            raw = self.complete(prompt, timeout_s)
        except GenerationTimeoutError:
            return None, "fallback_timeout"
        except Exception:  # a failing backend must never cost a reason
            return None, "fallback_error"
        text = clean(raw) if isinstance(raw, str) else ""
        if not text:
            return None, "fallback_error"
        result = self.guard.check(text, item.evidence, code=item.code, user_id=item.user_id)
        stats.violations.update(result.kinds)
        self._remember(key, text if result.ok else None)
        return (text, "generated") if result.ok else (None, "fallback_guard")

    def _remember(self, key: str, text: str | None) -> None:
        with self._lock:
            self._cache[key] = text
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _fallbacks(self, items: Sequence[ReasonRequest]) -> list[str]:
        out: list[str] = [""] * len(items)
        for language in {item.language for item in items}:
            templates = self._templates.get(language)
            if templates is None:
                templates = TemplateGenerator(language, max_chars=self.guard.max_chars)
                self._templates[language] = templates
            positions = [n for n, item in enumerate(items) if item.language == language]
            texts = templates.generate([items[n] for n in positions])
            for n, text in zip(positions, texts, strict=True):
                out[n] = text or ""
        return out


def clean(raw: str) -> str:
    """A model's answer as a sentence: its first non-empty line, without surrounding quotes
    or a "Reason:" label, whitespace collapsed."""
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = " ".join(lines[0].split())
    for label in ("Sentence:", "Reason:", "理由：", "推荐理由："):
        if text.startswith(label):
            text = text[len(label) :].strip()
    pairs = {'"': '"', "“": "”", "'": "'", "「": "」"}
    while len(text) >= 2 and pairs.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _unique(
    items: Sequence[ReasonRequest], texts: Sequence[str | None], fallbacks: Sequence[str]
) -> list[str]:
    """Model sentences where they repeat nothing in their list, template sentences
    elsewhere (templates never repeat within a list)."""
    templates_in_list: dict[str, Counter[str]] = {}
    for item, fallback in zip(items, fallbacks, strict=True):
        templates_in_list.setdefault(item.list_id, Counter())[fallback] += 1
    chosen: dict[str, set[str]] = {}
    out: list[str] = []
    for item, text, fallback in zip(items, texts, fallbacks, strict=True):
        used = chosen.setdefault(item.list_id, set())
        others = templates_in_list[item.list_id].copy()
        others[fallback] -= 1
        if text is None or text in used or others[text] > 0:
            text = fallback
        used.add(text)
        out.append(text)
    return out
