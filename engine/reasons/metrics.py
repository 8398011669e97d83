"""Quality measures of reason sentences: faithfulness, specificity, diversity, latency.

Pure functions over sentences and their evidence, used by the reasons evaluation
(``benchmarks/reasons_eval.py``, docs/reasons.md):

    faithfulness   share of sentences whose claims all pass :class:`~streamrec.engine.reasons.Guard`
                   (and, apart, the share it accepts outright: length and grounding too)
    specificity    share of reasons citing a user-specific signal (code not ``popular``
                   or ``trending``)
    diversity      distinct-1 / distinct-2 (unique n-grams over all n-grams of all
                   sentences; words in English, characters in Chinese), share of unique
                   sentences, mean and p95 length in characters
    latency        p50 / p99 of a list of durations, in milliseconds

Example:
    >>> stats = text_stats(["Because you viewed A", "Because you viewed B"], "en")
    >>> stats.distinct_1, stats.unique_share
    (0.625, 1.0)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamrec.engine.reasons._types import Evidence, Language
from streamrec.engine.reasons.guard import Guard

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def tokens(text: str, language: Language) -> list[str]:
    """The units n-grams are counted over: casefolded words (letters and digits, with
    inner apostrophes) in English, every non-space character in Chinese.

    Example:
        >>> tokens("Because you've viewed Heat (1995)", "en")
        ['because', "you've", 'viewed', 'heat', '1995']
        >>> tokens("因为你 浏览过", "zh")
        ['因', '为', '你', '浏', '览', '过']
    """
    if language == "zh":
        return [char for char in text if not char.isspace()]
    return _WORD.findall(text.casefold())


def distinct_n(texts: Iterable[str], n: int, language: Language) -> float:
    """Unique n-grams over all n-grams of all sentences (n-grams never span two
    sentences); 0.0 when there are none.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        msg = f"n must be >= 1, got {n}"
        raise ValueError(msg)
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        units = tokens(text, language)
        grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def distinct_within(groups: Iterable[Sequence[str]], n: int, language: Language) -> float:
    """Mean :func:`distinct_n` of each group (e.g. one recommendation list) on its own:
    how varied the sentences a user sees together are, independent of corpus size;
    NaN for no groups."""
    values = [distinct_n(group, n, language) for group in groups]
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values.

    Raises:
        ValueError: ``q`` outside 0-100.
    """
    if not 0 <= q <= 100:
        msg = f"q must be within 0-100, got {q}"
        raise ValueError(msg)
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class TextStats:
    """Diversity and length of a set of sentences (see :func:`text_stats`)."""

    sentences: int
    distinct_1: float
    distinct_2: float
    unique_share: float
    mean_chars: float
    p95_chars: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_stats(texts: Sequence[str], language: Language) -> TextStats:
    """Distinct-1, distinct-2, share of unique sentences, mean and p95 length (characters).

    All zero (lengths NaN) for no sentences.
    """
    lengths = [float(len(t)) for t in texts]
    return TextStats(
        sentences=len(texts),
        distinct_1=distinct_n(texts, 1, language),
        distinct_2=distinct_n(texts, 2, language),
        unique_share=len(set(texts)) / len(texts) if texts else 0.0,
        mean_chars=sum(lengths) / len(lengths) if lengths else math.nan,
        p95_chars=percentile(lengths, 95),
    )


def specificity(codes: Iterable[str]) -> float:
    """Share of reasons citing a user-specific signal: any code but ``popular`` and
    ``trending`` (0.0 for none)."""
    codes = list(codes)
    return sum(code not in _GENERAL for code in codes) / len(codes) if codes else 0.0


_GENERAL = frozenset({"popular", "trending"})


NOT_CLAIMS: frozenset[str] = frozenset({"ungrounded", "uncited", "too_long"})
"""Guard violation kinds that are not false claims: a sentence that states no fact of
its evidence (e.g. the generic template phrasings) or names none of the items its reason
rests on, and one over the length limit."""


@dataclass(frozen=True)
class Judged:
    """One sentence the guard rejected, and why."""

    text: str
    code: str
    violations: tuple[str, ...] = ()

    @property
    def kinds(self) -> set[str]:
        return {v.split(":", 1)[0] for v in self.violations}


@dataclass(frozen=True)
class Faithfulness:
    """How many sentences the guard accepted, and the ones it did not.

    Attributes:
        checked: sentences checked.
        passed: sentences with no violation at all (what the guarded writer accepts).
        faithful: sentences with no false claim (no violation outside
            :data:`NOT_CLAIMS`).
        grounded: sentences that state at least one fact of their evidence.
        failures: every sentence with a violation.
    """

    checked: int
    passed: int
    faithful: int
    grounded: int
    failures: list[Judged] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Share of sentences whose claims all pass the guard; NaN when none were checked."""
        return self.faithful / self.checked if self.checked else math.nan

    @property
    def guard_pass_rate(self) -> float:
        """Share of sentences the guard accepts outright (every rule, length and grounding
        included); NaN when none were checked."""
        return self.passed / self.checked if self.checked else math.nan

    @property
    def grounded_rate(self) -> float:
        """Share of sentences stating a fact of their evidence; NaN when none were checked."""
        return self.grounded / self.checked if self.checked else math.nan

    def violation_kinds(self) -> dict[str, int]:
        """How many rejected sentences had each violation kind, most frequent first."""
        counts: Counter[str] = Counter()
        for judged in self.failures:
            counts.update(judged.kinds)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def faithfulness(
    guard: Guard, sentences: Iterable[tuple[str, str, Evidence, str | None]]
) -> Faithfulness:
    """Check sentences against their own evidence.

    Args:
        guard: built with the whole catalog's titles and categories.
        sentences: (text, reason code, evidence, user id) per sentence.

    Returns:
        Counts and every rejected sentence with its violations.

    Example:
        >>> guard = Guard(["Trail Runner 3", "Ridge Jacket"], ["running"])
        >>> ev = {"items": [{"item_id": "s1", "title": "Trail Runner 3", "event": "view"}]}
        >>> f = faithfulness(guard, [("Because you viewed Trail Runner 3", "similar_to_recent",
        ...                           ev, "u1"), ("Another pick for you", "similar_to_recent",
        ...                           ev, "u1"), ("You bought Ridge Jacket", "similar_to_recent",
        ...                           ev, "u1")])
        >>> f.checked, f.passed, f.faithful, f.grounded
        (3, 1, 2, 1)
    """
    checked = passed = faithful = grounded = 0
    failures: list[Judged] = []
    for text, code, evidence, user_id in sentences:
        result = guard.check(text, evidence, code=code, user_id=user_id)
        checked += 1
        passed += result.ok
        faithful += not (result.kinds - NOT_CLAIMS)
        grounded += "ungrounded" not in result.kinds
        if not result.ok:
            failures.append(Judged(text, code, tuple(result.violations)))
    return Faithfulness(checked, passed, faithful, grounded, failures)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50 and p99 of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
    }
