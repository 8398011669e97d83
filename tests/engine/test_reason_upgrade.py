"""The reason upgrader: top-N items only, one model call per distinct prompt, every sentence
guarded, the cache keyed by the prompt, the work queue bounded (oldest dropped first)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamrec.engine.reasons._types import GenerationTimeoutError
from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.prompt import Prompt
from streamrec.engine.reasons.upgrade import ReasonUpgrader, WorkQueue, prompt_key
from streamrec.engine.types import Recommendation, RecommendedItem

TITLES = ["Trail Runner 3", "Ridge Jacket", "Summit Tent 2", "Cast Pan"]
GUARD = Guard(TITLES, ["running", "outdoor", "kitchen"])


def cited(title: str, event: str = "view", share: float = 0.5) -> dict[str, object]:
    return {"items": [{"item_id": title, "title": title, "event": event, "share": share}]}


def item(n: int, evidence: dict[str, object], code: str = "similar_to_recent") -> RecommendedItem:
    return RecommendedItem(f"i{n}", n, 1.0 / n, f"template {n}", code, evidence)


def a_list(user: str, trigger: str, *items: RecommendedItem) -> Recommendation:
    return Recommendation(user, trigger, 1_000, "m1", items)


class FirstFact:
    """A model that answers each prompt with its first fact, as a sentence: faithful."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        self.calls.append([p.user for p in prompts])
        out: list[str | None] = []
        for p in prompts:
            fact = p.user.splitlines()[1].removeprefix("- ").rstrip(".")
            out.append(f"{fact}, so this one may suit you.")
        return out


def test_only_the_top_items_are_asked_for_and_upgraded():
    model = FirstFact()
    rec = a_list(
        "ann",
        "e1",
        item(1, cited("Trail Runner 3")),
        item(2, cited("Ridge Jacket", "purchase")),
        item(3, cited("Summit Tent 2", "add_to_cart")),
        item(4, cited("Cast Pan")),
    )
    upgrades, stats = ReasonUpgrader(model, GUARD, top_n=3).upgrade([rec])
    [upgrade] = upgrades
    assert [i.item_id for i in upgrade.items] == ["i1", "i2", "i3"]
    assert upgrade.items[0].reason == 'You viewed "Trail Runner 3", so this one may suit you.'
    assert upgrade.recommendation_id == rec.recommendation_id
    assert stats.outcomes == {"upgraded": 3}
    assert stats.prompts_asked == 3


def test_equal_facts_share_one_prompt_and_the_cache_across_lists():
    model = FirstFact()
    upgrader = ReasonUpgrader(model, GUARD, top_n=1)
    # The same cited title and event, different shares: one prompt.
    first = a_list("ann", "e1", item(1, cited("Trail Runner 3", share=0.9)))
    second = a_list("bob", "e2", item(1, cited("Trail Runner 3", share=0.3)))
    upgrades, stats = upgrader.upgrade([first, second])
    assert len(upgrades) == 2
    assert stats.prompts_asked == 1
    assert stats.outcomes == {"upgraded": 1, "cached": 1}
    later, stats = upgrader.upgrade([a_list("cy", "e3", item(1, cited("Trail Runner 3")))])
    assert stats.prompts_asked == 0
    assert later[0].items[0].reason == upgrades[0].items[0].reason


def test_a_sentence_the_guard_rejects_is_not_published_and_not_asked_again():
    def inventive(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        return ["Everyone is buying the Moon Boots 9 right now!" for _ in prompts]

    upgrader = ReasonUpgrader(inventive, GUARD, top_n=1)
    upgrades, stats = upgrader.upgrade([a_list("ann", "e1", item(1, cited("Trail Runner 3")))])
    assert upgrades == []
    assert stats.outcomes == {"rejected": 1}
    assert sum(stats.rejections.values()) >= 1
    _, again = upgrader.upgrade([a_list("bob", "e2", item(1, cited("Trail Runner 3")))])
    assert again.prompts_asked == 0
    assert again.outcomes == {"rejected": 1}


def test_a_sentence_naming_the_user_is_rejected_for_that_user():
    def naming(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        return ['ann, you viewed "Trail Runner 3".' for _ in prompts]

    upgrades, stats = ReasonUpgrader(naming, GUARD, top_n=1).upgrade(
        [a_list("ann", "e1", item(1, cited("Trail Runner 3")))]
    )
    assert upgrades == []
    assert stats.outcomes == {"rejected": 1}


def test_a_sentence_equal_to_another_in_the_list_leaves_that_item_as_it_was():
    model = FirstFact()
    rec = a_list("ann", "e1", item(1, cited("Trail Runner 3")), item(2, cited("Trail Runner 3")))
    [upgrade], stats = ReasonUpgrader(model, GUARD, top_n=2).upgrade([rec])
    assert [i.item_id for i in upgrade.items] == ["i1"]
    assert stats.outcomes == {"upgraded": 1, "repeated": 1}


@pytest.mark.parametrize(
    ("error", "outcome"), [(GenerationTimeoutError("slow"), "timeout"), (RuntimeError(), "error")]
)
def test_a_failing_model_costs_the_upgrade_never_the_list(error, outcome):
    def failing(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        raise error

    upgrades, stats = ReasonUpgrader(failing, GUARD, top_n=2).upgrade(
        [a_list("ann", "e1", item(1, cited("Trail Runner 3")), item(2, cited("Ridge Jacket")))]
    )
    assert upgrades == []
    assert stats.outcomes == {outcome: 2}


def test_prompts_go_to_the_model_in_batches():
    model = FirstFact()
    lists = [a_list(f"u{n}", f"e{n}", item(1, cited(TITLES[n]))) for n in range(4)]
    _, stats = ReasonUpgrader(model, GUARD, top_n=1, batch_size=3, frames=False).upgrade(lists)
    assert [len(call) for call in model.calls] == [3, 1]
    assert stats.model_calls == 2


def test_the_prompt_key_is_the_facts_and_language_not_the_shares():
    from streamrec.engine.reasons.prompt import build_prompt

    a = build_prompt("similar_to_recent", cited("Trail Runner 3", share=0.9))
    b = build_prompt("similar_to_recent", cited("Trail Runner 3", share=0.1))
    c = build_prompt("similar_to_recent", cited("Trail Runner 3"), "zh")
    assert prompt_key(a) == prompt_key(b) != prompt_key(c)


def test_the_work_queue_serves_the_newest_first_and_drops_the_oldest_when_full():
    queue: WorkQueue[int] = WorkQueue(3)
    for n in range(5):
        queue.put(n)
    assert queue.dropped == 2
    assert queue.take(2) == [4, 3]
    assert queue.take(10) == [2]
    with pytest.raises(ValueError, match="at least 1"):
        WorkQueue(0)


# --- frames: one sentence per shape of facts ----------------------------------------------


def test_lists_whose_facts_differ_only_in_their_values_share_one_frame():
    model = FirstFact()
    events = ["view", "view", "view", "purchase"]
    lists = [a_list(f"u{n}", f"e{n}", item(1, cited(TITLES[n], events[n]))) for n in range(4)]
    upgrades, stats = ReasonUpgrader(model, GUARD, top_n=1).upgrade(lists)
    assert stats.prompts_asked == 2  # viewed [ITEM 1]; bought [ITEM 1]
    assert all("Trail Runner" not in p and "[ITEM 1]" in p for c in model.calls for p in c)
    assert [u.items[0].reason for u in upgrades] == [
        'You viewed "Trail Runner 3", so this one may suit you.',
        'You viewed "Ridge Jacket", so this one may suit you.',
        'You viewed "Summit Tent 2", so this one may suit you.',
        'You bought "Cast Pan", so this one may suit you.',
    ]
    assert stats.outcomes == {"upgraded": 2, "cached": 2}


class EchoExample:
    """A model that answers with its prompt's example sentence."""

    def __call__(self, prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        return [p.user.splitlines()[-2].split(": ", 1)[1] for p in prompts]


def test_items_of_one_list_sharing_a_frame_get_different_wordings():
    rec = a_list(
        "ann",
        "e1",
        item(1, cited("Trail Runner 3")),
        item(2, cited("Trail Runner 3")),
        item(3, cited("Trail Runner 3")),
    )
    [upgrade], stats = ReasonUpgrader(EchoExample(), GUARD, top_n=3).upgrade([rec])
    reasons = [i.reason for i in upgrade.items]
    assert len(set(reasons)) == 3
    assert all("Trail Runner 3" in r for r in reasons)
    assert stats.outcomes == {"upgraded": 3}


def test_an_answer_with_a_placeholder_its_frame_does_not_fill_is_never_used():
    model_calls = []

    def confused(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        model_calls.append(len(prompts))
        return ["Because you viewed [ITEM 1] and [ITEM 2]" for _ in prompts]

    upgrader = ReasonUpgrader(confused, GUARD, top_n=1)
    upgrades, stats = upgrader.upgrade([a_list("ann", "e1", item(1, cited("Trail Runner 3")))])
    assert upgrades == []
    assert stats.rejections == {"placeholder": 1}
    _, again = upgrader.upgrade([a_list("bob", "e2", item(1, cited("Ridge Jacket")))])
    assert model_calls == [1]
    assert again.outcomes == {"rejected": 1}


def test_a_frame_too_long_for_a_long_title_still_serves_short_ones():
    def wordy(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        return ["You viewed [ITEM 1], which is why this one is here for you today" for _ in prompts]

    long_title = "Trail Runner 3 " + "Ultra " * 20
    guard = Guard([*TITLES, long_title], ["running"])
    upgrader = ReasonUpgrader(wordy, guard, top_n=1)
    _, stats = upgrader.upgrade([a_list("ann", "e1", item(1, cited(long_title.strip())))])
    assert stats.rejections == {"too_long": 1}
    [upgrade], stats = upgrader.upgrade([a_list("bob", "e2", item(1, cited("Cast Pan")))])
    assert upgrade.items[0].reason.startswith("You viewed Cast Pan")
    assert stats.outcomes == {"cached": 1}


def test_an_item_whose_own_wording_fails_gets_another_cached_wording_of_its_frame():
    def by_variant(prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        return [
            f"{p.prefix} you viewed [ITEM 1]"
            if p.prefix
            else "Because you viewed [ITEM 1], which is why we picked this one for you"
            for p in prompts
        ]

    long_title = "Trail Runner 3 Ultra Extra Wide Edition"
    guard = Guard([*TITLES, long_title], max_chars=80)
    upgrader = ReasonUpgrader(by_variant, guard, top_n=2)
    # Two items of one frame: both wordings are written and cached.
    first = a_list("ann", "e1", item(1, cited("Cast Pan")), item(2, cited("Cast Pan")))
    [upgrade], _ = upgrader.upgrade([first])
    assert len(upgrade.items) == 2
    # Too long with a long title in its own wording; the other wording fits.
    [upgrade], stats = upgrader.upgrade([a_list("bob", "e2", item(1, cited(long_title)))])
    assert upgrade.items[0].reason == f"Recommended because you viewed {long_title}"
    assert stats.outcomes == {"cached": 1}
    assert stats.rejections == {"too_long": 1}
