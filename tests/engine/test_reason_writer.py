"""The language-model writer: model sentences when in time and faithful, template
sentences otherwise, every outcome counted."""

from __future__ import annotations

import pytest

from streamrec.engine.reasons import (
    GenerationError,
    GenerationTimeoutError,
    Guard,
    LMReasonWriter,
    Prompt,
    ReasonRequest,
    TemplateGenerator,
    evidence_signature,
)
from streamrec.engine.reasons.generator import clean

GUARD = Guard(["Trail Runner 3", "Ridge Jacket"], ["running", "outdoor"])
SHOE = {"items": [{"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 1.0}]}
RUNNING = {"category": "running", "count": 3, "of_recent": 5}
TEMPLATE = TemplateGenerator("en")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Answers from a script; each call may take (fake) time."""

    def __init__(self, clock: Clock, answers, took: float = 0.01) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.took = took
        self.calls: list[tuple[Prompt, float]] = []

    def __call__(self, prompt: Prompt, timeout_s: float) -> str | None:
        self.calls.append((prompt, timeout_s))
        self.clock.now += self.took
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def writer_for(answers, *, took=0.01, **kw):
    clock = Clock()
    backend = Backend(clock, answers, took)
    return LMReasonWriter(backend, GUARD, clock=clock, **kw), backend, clock


def req(evidence=SHOE, code="similar_to_recent", **kw) -> ReasonRequest:
    return ReasonRequest(code, evidence, **kw)


def test_a_faithful_answer_in_time_is_used_then_served_from_the_cache():
    writer, backend, clock = writer_for(["Since you viewed Trail Runner 3, try this"])
    first = writer.write([req()], deadline=clock.now + 1)
    assert first.texts == ["Since you viewed Trail Runner 3, try this"]
    assert first.outcomes == ["generated"]
    assert first.stats.as_dict() == {
        "generated": 1,
        "cached": 0,
        "fallback_timeout": 0,
        "fallback_error": 0,
        "fallback_guard": 0,
    }
    again = writer.write([req(), req(item_id="other")], deadline=clock.now + 1)
    assert again.outcomes == ["cached", "cached"]
    assert again.stats.cached == 2
    assert len(backend.calls) == 1


def test_a_hallucinated_answer_falls_back_to_the_template_and_is_remembered():
    writer, backend, clock = writer_for(["Trending: 9 shoppers bought Ridge Jacket"])
    out = writer.write([req(user_id="u1")], deadline=clock.now + 1)
    assert out.outcomes == ["fallback_guard"]
    assert out.texts == [TEMPLATE.render("similar_to_recent", SHOE)]
    assert {"claim", "title", "number", "event"} <= set(out.stats.violations)
    again = writer.write([req()], deadline=clock.now + 1)
    assert again.outcomes == ["fallback_guard"]
    assert len(backend.calls) == 1  # the rejection is cached too


@pytest.mark.parametrize(
    "answer",
    [None, "", "   \n ", GenerationError("HTTP 500"), RuntimeError("backend bug")],
    ids=["none", "empty", "blank", "generation-error", "any-exception"],
)
def test_backend_failures_fall_back_and_count_as_errors(answer):
    writer, _, clock = writer_for([answer])
    out = writer.write([req()], deadline=clock.now + 1)
    assert out.outcomes == ["fallback_error"]
    assert out.stats.fallback_error == 1
    assert out.texts == [TEMPLATE.render("similar_to_recent", SHOE)]


def test_timeouts_fall_back_and_nothing_starts_after_the_deadline():
    writer, backend, clock = writer_for(
        [GenerationTimeoutError("slow"), "3 of your last 5 items were in running"], took=0.03
    )
    requests = [
        req(),
        req(RUNNING, "category_affinity"),
        req({"interactions": 5, "user_history": 1}, "popular"),
    ]
    out = writer.write(requests, deadline=clock.now + 0.05)
    # 1st: timed out (0.03 s spent); 2nd: started with 0.02 s left, answered after the
    # deadline; 3rd: no time left, the backend is not called.
    assert out.outcomes == ["fallback_timeout"] * 3
    assert out.stats.fallback_timeout == 3
    assert [round(t, 3) for _, t in backend.calls] == [0.05, 0.02]
    assert out.texts == TEMPLATE.render_list(
        [(r.code, r.evidence) for r in requests], [r.item_id for r in requests]
    )


def test_the_call_timeout_caps_each_call():
    writer, backend, clock = writer_for(["Because you viewed Trail Runner 3"], call_timeout_s=0.2)
    writer.write([req()], deadline=clock.now + 10)
    assert backend.calls[0][1] == pytest.approx(0.2)


def test_a_late_faithful_answer_is_cached_for_the_next_list():
    writer, _, clock = writer_for(["Because 3 of your last 5 items were in running!"], took=0.5)
    late = writer.write([req(RUNNING, "category_affinity")], deadline=clock.now + 0.1)
    assert late.outcomes == ["fallback_timeout"]
    assert late.texts == [TEMPLATE.render("category_affinity", RUNNING)]
    again = writer.write([req(RUNNING, "category_affinity")], deadline=clock.now + 0.1)
    assert again.outcomes == ["cached"]
    assert again.texts == ["Because 3 of your last 5 items were in running!"]


def test_missed_requests_go_to_on_miss_and_warming_fills_the_cache():
    missed: list[ReasonRequest] = []
    writer, backend, clock = writer_for(
        ["Because you viewed Trail Runner 3, here it is"], on_miss=missed.append
    )
    out = writer.write([req()], deadline=clock.now)  # no time at all
    assert out.outcomes == ["fallback_timeout"]
    assert missed == [req()]
    assert writer.warm(missed[0]) == "generated"
    assert backend.calls[0][1] == writer.call_timeout_s
    assert writer.write([req()], deadline=clock.now).outcomes == ["cached"]
    assert writer.warm(missed[0]) == "cached"


def test_no_sentence_repeats_within_a_list_and_lists_are_independent():
    same = "Because you viewed Trail Runner 3"  # also the first item's template sentence
    writer, _, clock = writer_for([same, same])
    other_shoe = {"items": [{**SHOE["items"][0], "share": 0.9}]}
    requests = [
        req(item_id="a", list_id="L1"),
        req(other_shoe, item_id="b", list_id="L1"),
        req(item_id="a", list_id="L2"),
    ]
    out = writer.write(requests, deadline=clock.now + 1)
    assert out.outcomes == ["generated", "generated", "cached"]
    assert len(set(out.texts[:2])) == 2
    assert same in out.texts[:2]


def test_generate_uses_the_budget_from_now():
    writer, backend, _ = writer_for(["Because you viewed Trail Runner 3"], budget_s=0.25)
    assert writer.generate([req()]) == ["Because you viewed Trail Runner 3"]
    assert backend.calls[0][1] == pytest.approx(0.25)


def test_the_cache_is_bounded_least_recently_used_first():
    writer, backend, clock = writer_for(["Popular with other users"] * 4, cache_size=2)
    evidences = [{"interactions": n, "user_history": 1} for n in (1, 2, 3)]
    for ev in evidences:
        writer.write([req(ev, "popular")], deadline=clock.now + 1)
    assert len(backend.calls) == 3
    newest = writer.write([req(evidences[2], "popular")], deadline=clock.now + 1)
    assert newest.outcomes == ["cached"]
    oldest = writer.write([req(evidences[0], "popular")], deadline=clock.now + 1)
    assert oldest.outcomes == ["generated"]  # it was evicted: asked again
    assert len(backend.calls) == 4


def test_the_evidence_signature_is_stable_and_covers_code_and_language():
    sig = evidence_signature("category_affinity", RUNNING, "en")
    assert sig == evidence_signature("category_affinity", dict(reversed(RUNNING.items())), "en")
    assert sig != evidence_signature("category_affinity", RUNNING, "zh")
    assert sig != evidence_signature("tag_affinity", RUNNING, "en")
    assert sig == "114b6cc0735d6a1f0c0c084c589992fb"  # stable across processes and versions


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"Because you viewed X."', "Because you viewed X."),
        ("Sentence: Because you viewed X\nExplanation: ...", "Because you viewed X"),
        ("\n\n  “因为你浏览过《X》”  ", "因为你浏览过《X》"),
        ("Because   you\tviewed X", "Because you viewed X"),
        ("", ""),
    ],
)
def test_answers_are_cleaned_to_one_sentence(raw, expected):
    assert clean(raw) == expected
