"""Instructions for a language model that writes one reason sentence from its evidence.

The prompt holds the evidence's facts and nothing else (no user id, no item ids, no
scores), the output language and a template sentence as an example; the model's answer
is still checked by :mod:`streamrec.engine.reasons.guard` before anyone sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.engine.reasons._types import Evidence, Language
from streamrec.engine.reasons.templates import TemplateGenerator

_LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese (简体中文)"}
# Facts are in the second person, as the answer should be, and say no "recently added"
# (the guard reads that as a newness claim): small models copy the facts' wording.
_EVENTS = {
    "view": 'You viewed "{title}".',
    "click": 'You clicked on "{title}".',
    "add_to_cart": 'You added "{title}" to your cart.',
    "purchase": 'You bought "{title}".',
}
_OTHER_EVENT = 'You interacted with "{title}".'
_BEGIN = {"en": "Begin the sentence with: ", "zh": "句子开头："}


@dataclass(frozen=True)
class Prompt:
    """A chat prompt: a system instruction and a user message.

    Attributes:
        system: the rules.
        user: the facts and the example.
        language: the language the answer must be in.
        max_chars: the longest acceptable answer.
        prefix: words the answer starts with ("" for none): a local model continues
            them, a server is asked to begin with them.
    """

    system: str
    user: str
    language: Language
    max_chars: int
    prefix: str = ""

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style chat messages."""
        user = self.user
        if self.prefix:
            user += f"\n{_BEGIN[self.language]}{self.prefix}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def build_prompt(
    code: str,
    evidence: Evidence,
    language: Language = "en",
    *,
    max_chars: int = 160,
    variant: int = 0,
) -> Prompt:
    """The instruction for one reason, built from its evidence only.

    Args:
        code: the reason code.
        evidence: the facts the sentence may use.
        language: "en" or "zh".
        max_chars: the longest acceptable answer.
        variant: which of the template's best phrasings is the example (0: the canonical
            one); other examples lead a model to other wordings of the same facts.

    Returns:
        The prompt; its ``user`` part lists the facts and a template sentence.

    Example:
        >>> p = build_prompt("category_affinity",
        ...                  {"category": "running", "count": 3, "of_recent": 5})
        >>> print(p.user.splitlines()[1])
        - 3 of your last 5 items were in the category "running".
    """
    name = _LANGUAGE_NAMES[language]
    system = (
        "You write one short, friendly sentence that tells a shopper why an item is "
        f'recommended to them; speak to them as "you". Write in {name}, at most '
        f"{max_chars} characters. Use only the facts given: no other numbers, titles, "
        "categories, people or links. Do not say an item is popular, trending, new or "
        "bought together unless a fact says so. Reply with the sentence only."
    )
    facts = "\n".join(f"- {fact}" for fact in _facts(code, evidence))
    best = TemplateGenerator(language).phrasings(code, evidence)[0]
    example = best[variant % len(best)]
    user = f"Facts:\n{facts}\nExample of an acceptable sentence: {example}\nSentence:"
    # Another phrasing's first words make a model that copies the facts word for word
    # (SmolLM2 does, whatever the example) write another sentence for the same facts.
    prefix = opening(example, language) if variant % len(best) else ""
    return Prompt(system, user, language, max_chars, prefix)


def opening(sentence: str, language: Language) -> str:
    """The first words of a template sentence, before any value: two words in English,
    up to four characters in Chinese ("" when it starts with a value)."""
    head = re.split(r"[\[《「“\"(（，,:：0-9]", sentence, maxsplit=1)[0]
    if language == "zh":
        return head[:4]
    return " ".join(head.split()[:2])


def _facts(code: str, evidence: Evidence) -> list[str]:
    facts: list[str] = []
    if code == "similar_to_recent":
        facts += [_cited_fact(e) for e in _entries(evidence.get("items"))]
        facts.append("The recommended item is similar to these items.")
    elif code == "new_arrival":
        category = evidence.get("category")
        facts.append(
            f'The item is new in the category "{category}".' if category else "The item is new."
        )
        facts += [_cited_fact(e) for e in _entries(evidence.get("similar_items"))]
    elif code in ("bought_together", "viewed_together"):
        key, verb = (
            ("bought_with", "bought or added to cart")
            if code == "bought_together"
            else ("viewed_with", "viewed")
        )
        partner = evidence.get(key)
        if isinstance(partner, Mapping) and partner.get("title"):
            facts.append(_cited_fact(partner))
            facts.append(
                f'The recommended item and "{partner.get("title")}" were {verb} together '
                f"{evidence.get('count')} times by shoppers."
            )
    elif code == "trending":
        half_life = evidence.get("half_life")
        window = ""
        if isinstance(half_life, Mapping):
            unit = str(half_life.get("unit"))
            window = (
                f"{half_life.get('value')} {unit if half_life.get('value') == 1 else unit + 's'}"
            )
        facts.append(
            f"The item is trending right now: number {evidence.get('rank')}, with "
            f"{evidence.get('count')} recent interactions (an interaction counts half after "
            f"{window})."
        )
    elif code == "popular":
        facts.append(f"Other users interacted with this item {evidence.get('interactions')} times.")
        if evidence.get("user_history") == 0:
            facts.append("We do not know your taste yet.")
    else:
        facts.append(_habit_fact(evidence))
    also = evidence.get("also")
    if isinstance(also, Mapping):
        facts.append(_habit_fact(also))
    return facts


def _habit_fact(evidence: Mapping[str, Any]) -> str:
    head = f"{evidence.get('count')} of your last {evidence.get('of_recent')} items"
    if "tag" in evidence:
        return f'{head} had the tag "{evidence["tag"]}".'
    return f'{head} were in the category "{evidence.get("category")}".'


def _cited_fact(entry: Mapping[str, Any]) -> str:
    fact = _EVENTS.get(str(entry.get("event")), _OTHER_EVENT)
    return fact.format(title=entry.get("title"))


def _entries(value: object) -> Sequence[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [e for e in value if isinstance(e, Mapping) and e.get("title")]
