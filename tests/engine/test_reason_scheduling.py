"""The reason writer's scheduling: a list whose sentences are known is upgraded at once,
never behind a model call; a list with an unknown prompt waits for the model's answer;
the model is asked newest prompts first; waiting is bounded and what is dropped counted."""

from __future__ import annotations

from collections.abc import Sequence

from streamrec.engine.reasons import GenerationTimeoutError
from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.prompt import Prompt
from streamrec.engine.reasons.scheduling import UpgradeScheduler
from streamrec.engine.reasons.upgrade import ReasonUpgrader, UpgradeStats
from streamrec.engine.types import Recommendation, RecommendedItem

SLOW = "the model ran out of time"
GUARD = Guard(["Trail Runner 3", "Ridge Jacket", "Cast Pan"])


def a_list(user: str, event: str = "view", title: str = "Trail Runner 3") -> Recommendation:
    evidence = {"items": [{"item_id": title, "title": title, "event": event}]}
    item = RecommendedItem("i1", 1, 1.0, "template", "similar_to_recent", evidence)
    return Recommendation(user, f"e-{user}", 1_000, "m1", (item,))


def first_fact(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
    return [
        p.user.splitlines()[1].removeprefix("- ").rstrip(".") + ", so here it is" for p in prompts
    ]


def scheduler(capacity: int = 10) -> UpgradeScheduler:
    return UpgradeScheduler(ReasonUpgrader(first_fact, GUARD, top_n=1), capacity)


def answer(s: UpgradeScheduler, n: int = 4):  # type: ignore[no-untyped-def]
    return s.answered(s.upgrader.generate(s.next_prompts(n), UpgradeStats()))


def test_a_list_with_an_unknown_prompt_waits_for_the_model_and_then_is_ready():
    s = scheduler()
    assert s.add([a_list("ann")]) == []
    assert s.waiting == 1
    [(rec, wanted)] = answer(s)
    assert rec.user_id == "ann"
    stats = UpgradeStats()
    upgrade = s.upgrader.assemble(rec, wanted, s.fresh, stats)
    assert upgrade is not None
    assert upgrade.items[0].reason == 'You viewed "Trail Runner 3", so here it is'
    assert stats.outcomes == {"upgraded": 1}
    assert s.waiting == 0


def test_a_list_whose_sentences_are_known_is_ready_at_once_even_while_others_wait():
    s = scheduler()
    s.add([a_list("ann")])
    answer(s)
    # Same frame, other title: known. Another event: a new frame, which waits.
    ready = s.add([a_list("bob", title="Ridge Jacket"), a_list("cy", event="purchase")])
    assert [rec.user_id for rec, _ in ready] == ["bob"]
    assert s.waiting == 1


def test_the_model_is_asked_newest_prompts_first_and_each_prompt_once():
    s = scheduler()
    s.add([a_list("ann", "view"), a_list("bob", "purchase"), a_list("cy", "click")])
    s.add([a_list("dan", "click")])  # the same prompt as cy's: not queued twice
    first = s.next_prompts(1)
    assert "clicked" in first[0][1].user
    s.add([a_list("eve", "click")])  # in flight: not queued again
    rest = s.next_prompts(10)
    assert [("bought" in p.user, "viewed" in p.user) for _, p in rest] == [
        (True, False),
        (False, True),
    ]


def test_waiting_is_bounded_and_the_oldest_list_is_dropped_and_counted():
    s = scheduler(capacity=2)
    s.add([a_list("ann", "view"), a_list("bob", "purchase"), a_list("cy", "click")])
    assert s.waiting == 2
    assert s.dropped_items == 1
    ready = answer(s, 10)
    assert sorted(rec.user_id for rec, _ in ready) == ["bob", "cy"]


def test_prompts_of_dropped_lists_are_the_first_to_go_and_are_never_asked():
    s = scheduler(capacity=2)  # 2 waiting lists, 2 prompts to ask (top 1)
    s.add([a_list("ann", "view"), a_list("bob", "purchase"), a_list("cy", "click")])
    assert s.dropped_items == 1  # ann's list
    asked = [p.user for _, p in s.next_prompts(10)]
    assert len(asked) == 2
    assert not any("viewed" in p for p in asked)  # ann's prompt went with it


def test_a_failed_prompt_releases_its_lists_and_is_asked_again_later():
    def slow(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        raise GenerationTimeoutError(SLOW)

    s = UpgradeScheduler(ReasonUpgrader(slow, GUARD, top_n=1), 10)
    s.add([a_list("ann")])
    [(rec, wanted)] = answer(s)
    stats = UpgradeStats()
    assert s.upgrader.assemble(rec, wanted, s.fresh, stats) is None
    assert stats.outcomes == {"timeout": 1}
    s.tidy()
    assert s.add([a_list("bob")]) == []  # asked again, not failed for good
    assert len(s.next_prompts(10)) == 1


def test_outcomes_are_kept_only_while_a_waiting_list_wants_them():
    s = scheduler(capacity=1)
    s.add([a_list("ann", "view")])
    prompts = s.next_prompts(10)
    s.add([a_list("bob", "purchase")])  # ann's list is dropped while its prompt is asked
    assert s.answered(s.upgrader.generate(prompts, UpgradeStats())) == []
    s.tidy()
    assert s.fresh == {}  # the answer is in the cache; nothing waits for its outcome
    assert s.upgrader.known(prompts[0][0])
