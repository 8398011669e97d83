"""The data of ``streamrec reasons finetune``: reason cases from users' histories, their
prompts (sentence frames by default, as the reason writer asks them), (prompt, sentence)
training pairs checked by the guard, and the held-out measures of a model's answers."""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec.engine.reasons._types import Evidence, Language
from streamrec.engine.reasons.frames import delexicalise, relexicalise
from streamrec.engine.reasons.generator import clean
from streamrec.engine.reasons.guard import Guard, GuardResult
from streamrec.engine.reasons.metrics import distinct_n
from streamrec.engine.reasons.prompt import Prompt, build_prompt
from streamrec.engine.reasons.templates import TemplateGenerator
from streamrec.engine.types import Event, Interaction, UserState


@dataclass(frozen=True)
class ReasonCase:
    """One recommended item's reason for one user."""

    user_id: str
    item_id: str
    code: str
    evidence: Evidence


def user_states(
    events: Iterable[Event], users: Sequence[str], *, history_length: int, seed: int = 0
) -> list[UserState]:
    """Each user's state after the first 30-90% of their events (time order; drawn per
    user, so histories of many lengths occur); users with fewer than 2 events left out."""
    wanted, by_user = set(users), dict[str, list[Event]]()
    for event in events:
        if event.user_id in wanted:
            by_user.setdefault(event.user_id, []).append(event)
    rng, out = random.Random(seed), []
    for user in users:
        own = by_user.get(user, [])
        if len(own) < 2:
            continue
        kept = own[: max(1, math.ceil(len(own) * rng.uniform(0.3, 0.9)))]
        history = tuple(Interaction(e.item_id, e.type, e.ts) for e in kept[-history_length:])
        purchased = frozenset(e.item_id for e in kept if e.type == "purchase")
        out.append(UserState(user, history, purchased, frozenset(e.item_id for e in kept)))
    return out


def split_users(users: Iterable[str], fraction: float, seed: int = 0) -> tuple[set[str], set[str]]:
    """(training users, held-out users): disjoint, by a seeded shuffle; at least one held
    out (and one kept) when ``fraction`` > 0 and there are two users or more."""
    ordered = sorted(set(users))
    random.Random(seed).shuffle(ordered)
    held = round(len(ordered) * fraction)
    if fraction > 0 and len(ordered) >= 2:
        held = min(max(held, 1), len(ordered) - 1)
    return set(ordered[held:]), set(ordered[:held])


def recombined_cases(
    cases: Sequence[ReasonCase], n: int, seed: int = 0, *, prefix: str = "recombined"
) -> list[ReasonCase]:
    """Up to ``n`` reason cases whose cited history items, their events and their habit clause
    are drawn afresh from those of ``cases``: as many cited items as some case cites, each
    with an event some case shows, with or without a habit some case has.

    A sample of users shows only some combinations (and a held-out sample takes many of
    them), so these cases fill in the frames real lists make that the training users'
    lists happen not to. Only cases that cite history items (``items``) are recombined;
    every title, event and habit occurs in some real case (a sentence about them is checked
    by the guard against the recombined evidence, as any other).
    """
    base = [c for c in cases if isinstance(c.evidence.get("items"), list) and c.evidence["items"]]
    if n <= 0 or not base:
        return []
    entries: dict[str, dict[str, Any]] = {}
    habits: dict[str, list[Any]] = {"": [None]}  # by kind, so that each kind is as likely
    for case in base:
        for entry in case.evidence["items"]:
            if isinstance(entry, dict) and entry.get("title"):
                entries.setdefault(str(entry.get("item_id", entry["title"])), entry)
        also = case.evidence.get("also")
        if isinstance(also, dict):
            habits.setdefault(str(also.get("code", "")), []).append(also)
    events = sorted({str(e["event"]) for e in entries.values() if e.get("event")})
    if not events:
        return []
    most = max(len(c.evidence["items"]) for c in base)
    pool, rng, out = list(entries.values()), random.Random(seed), []
    for k in range(n):
        case = rng.choice(base)
        others = [e for e in pool if e.get("item_id") != case.item_id]
        if not others:
            continue
        cited = rng.sample(others, min(rng.randint(1, most), len(others)))
        evidence = dict(case.evidence, items=[dict(e, event=rng.choice(events)) for e in cited])
        also = rng.choice(habits[rng.choice(sorted(habits))])
        evidence.pop("also", None)
        if also is not None:
            evidence["also"] = also
        out.append(ReasonCase(f"{prefix}-{k}", case.item_id, case.code, evidence))
    return out


@dataclass(frozen=True)
class TrainingPair:
    """A prompt and a sentence to answer it with; ``source``: template or accepted."""

    prompt: Prompt
    target: str
    source: str
    user_id: str


@dataclass
class PairReport:
    """Counts; ``rejected``: violation kinds of the targets the guard rejected."""

    prompts: int = 0
    pairs: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    accepted_unmatched: int = 0


def shown_evidence(case: ReasonCase, frames: bool) -> tuple[Evidence, dict[str, str] | None]:
    """The evidence a prompt shows for the case (its frame, with placeholders, when
    ``frames``) and the frame's slots (None without frames)."""
    if not frames:
        return case.evidence, None
    return delexicalise(case.evidence)


def prompt_of(
    case: ReasonCase, language: Language, max_chars: int = 160, *, frames: bool = True
) -> Prompt:
    """The language-model prompt for a case's reason: its sentence frame's, as the reason
    writer asks it (:mod:`streamrec.engine.reasons.frames`), or with ``frames=False``
    the one of its own facts."""
    evidence, _ = shown_evidence(case, frames)
    return build_prompt(case.code, evidence, language, max_chars=max_chars)


def unique_prompts(
    cases: Iterable[ReasonCase], language: Language, max_chars: int = 160, *, frames: bool = True
) -> dict[str, tuple[Prompt, ReasonCase]]:
    """The distinct prompts of ``cases`` (by user message), each with its first case."""
    out: dict[str, tuple[Prompt, ReasonCase]] = {}
    for case in cases:
        prompt = prompt_of(case, language, max_chars, frames=frames)
        out.setdefault(prompt.user, (prompt, case))
    return out


def filled(text: str, slots: dict[str, str] | None) -> str | None:
    """A frame sentence with the case's values put back (the text itself without frames);
    None when it has a placeholder the frame does not fill."""
    return text if slots is None else relexicalise(text, slots)


def template_targets(
    code: str, evidence: Evidence, language: Language, variants: int, key: str, max_chars: int
) -> list[str]:
    """Up to ``variants`` template sentences (any tier but the generic last one, at most
    ``max_chars`` long), shuffled by a hash of ``key``."""
    tiers = TemplateGenerator(language, max_chars=max_chars).phrasings(code, evidence)
    specific = [t for tier in tiers[:-1] for t in tier] if len(tiers) > 1 else []
    unique = list(dict.fromkeys(t for t in specific if len(t) <= max_chars))
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    random.Random(seed).shuffle(unique)
    return unique[:variants]


def training_pairs(
    cases: Iterable[ReasonCase],
    guard: Guard,
    language: Language,
    *,
    variants: int = 3,
    accepted: Iterable[tuple[str, str, str]] = (),
    exclude: Iterable[str] = (),
    max_chars: int = 160,
    frames: bool = True,
) -> tuple[list[TrainingPair], PairReport]:
    """(prompt, sentence) pairs for the distinct prompts of ``cases`` but those in
    ``exclude`` (user messages): up to ``variants`` template sentences each and the
    ``accepted`` (user message, language, sentence) for it; a sentence ``guard`` rejects
    for the prompt's evidence (and user) is left out. With ``frames`` the prompts and the
    sentences are frames (placeholders), and the guard checks each filled in."""
    prompts = unique_prompts(cases, language, max_chars, frames=frames)
    for key in set(exclude):
        prompts.pop(key, None)
    extra: dict[str, list[str]] = {}
    report = PairReport(prompts=len(prompts))
    for user_message, answer_language, sentence in accepted:
        if answer_language != language or user_message not in prompts:
            report.accepted_unmatched += 1
        else:
            extra.setdefault(user_message, []).append(sentence)
    pairs: list[TrainingPair] = []
    for key, (prompt, case) in prompts.items():
        shown, slots = shown_evidence(case, frames)
        texts = template_targets(case.code, shown, language, variants, key, max_chars)
        candidates = [("template", t) for t in texts]
        candidates += [("accepted", clean(t)) for t in extra.get(key, [])]
        seen: set[str] = set()
        for source, text in candidates:
            if not text or text in seen:
                continue
            seen.add(text)
            full = filled(text, slots)
            if full is None:
                report.rejected["placeholder"] += 1
                continue
            verdict = guard.check(full, case.evidence, code=case.code, user_id=case.user_id)
            if verdict.ok:
                pairs.append(TrainingPair(prompt, text, source, case.user_id))
                report.by_source[source] += 1
            else:
                report.rejected.update(verdict.kinds)
    report.pairs = len(pairs)
    return pairs, report


@dataclass(frozen=True)
class EvalCase:
    """A held-out prompt, its case, the template sentence it shows as its example and its
    frame's slots (None without frames)."""

    prompt: Prompt
    case: ReasonCase
    example: str
    slots: dict[str, str] | None = None


def eval_cases(
    cases: Iterable[ReasonCase],
    language: Language,
    n: int,
    seed: int = 0,
    max_chars: int = 160,
    *,
    frames: bool = True,
) -> list[EvalCase]:
    """Up to ``n`` distinct prompts of ``cases``, sampled with a seed, round robin over the
    codes from the rarest, so that a small sample still covers them."""
    prompts = list(unique_prompts(cases, language, max_chars, frames=frames).values())
    random.Random(seed).shuffle(prompts)
    by_code: dict[str, list[tuple[Prompt, ReasonCase]]] = {}
    for prompt, case in prompts:
        by_code.setdefault(case.code, []).append((prompt, case))
    queues = sorted(by_code.values(), key=len)
    picked: list[tuple[Prompt, ReasonCase]] = []
    while len(picked) < n and any(queues):
        picked += [q.pop() for q in queues if q][: n - len(picked)]
    templates = TemplateGenerator(language, max_chars=max_chars)
    out = []
    for prompt, case in picked:
        shown, slots = shown_evidence(case, frames)
        out.append(EvalCase(prompt, case, templates.canonical(case.code, shown), slots))
    return out


def answer_metrics(
    cases: Sequence[EvalCase], answers: Sequence[str | None], guard: Guard, seconds: float
) -> dict[str, Any]:
    """Raw answers judged against their prompts' evidence: ``guard_pass`` (share that the
    guard accepts after ``clean``, a frame's answer filled in with its case's values; a
    missing answer fails as ``empty``, a placeholder left over as ``placeholder``), ``rejections``
    (answers per violation kind), distinct-1/2 and ``mean_chars`` of the cleaned answers,
    ``copies_example`` (share equal to the prompt's example), ``seconds_per_sentence``
    and every answer with its verdict."""
    if len(cases) != len(answers):
        msg = f"{len(cases)} cases but {len(answers)} answers"
        raise ValueError(msg)
    rejections: Counter[str] = Counter()
    judged: list[dict[str, Any]] = []
    passed = copies = 0
    for e, raw in zip(cases, answers, strict=True):
        answer = clean(raw) if isinstance(raw, str) else ""
        copies += answer == e.example
        text = filled(answer, e.slots)
        if text is None:
            verdict = GuardResult(False, ["placeholder: one its frame does not fill"])
            text = answer
        else:
            verdict = guard.check(text, e.case.evidence, code=e.case.code, user_id=e.case.user_id)
        passed += verdict.ok
        rejections.update(verdict.kinds)
        judged.append({"code": e.case.code, "facts": e.prompt.user, "raw": raw, "text": text})
        judged[-1].update(ok=verdict.ok, violations=verdict.violations)
    texts = [a["text"] for a in judged if a["text"]]
    n, language = len(cases), cases[0].prompt.language if cases else "en"
    return {
        "prompts": n,
        "guard_pass": passed / n if n else 0.0,
        "rejections": dict(rejections.most_common()),
        "distinct_1": distinct_n(texts, 1, language),
        "distinct_2": distinct_n(texts, 2, language),
        "mean_chars": sum(map(len, texts)) / len(texts) if texts else math.nan,
        "copies_example": copies / n if n else 0.0,
        "seconds_per_sentence": seconds / n if n else math.nan,
        "answers": judged,
    }
