"""Sentence frames: one model sentence per *shape* of facts, filled in per list.

A model on a CPU writes about one sentence a second; a stream of lists asks for dozens a
second, nearly all with different titles and numbers. Data-to-text generation has long
handled this by delexicalisation: the model writes the sentence for the facts with their
values replaced by placeholders, and the values are put back afterwards. Here the
placeholders are ``[ITEM 1]``, ``[ITEM 2]`` (cited titles, in order), ``[CATEGORY]``,
``[TAG]`` and sentinel numbers (:data:`SENTINELS`) for every number but 0 and 1 (which
decide grammar: "1 hour", "we do not know your taste"). A frame holds the reason code,
each cited item's event and which facts are present, so there are a few hundred frames
per language, not one prompt per list, and a writer's cache of them fills in minutes.

:func:`delexicalise` gives the frame's evidence (from which the prompt is built as for any
evidence) and the slots; :func:`relexicalise` puts the values into the model's answer, or
returns None when the answer has a placeholder the slots do not fill. The filled sentence
then passes the guard against the real evidence like any other.

Example:
    >>> evidence = {"items": [{"item_id": "50", "title": "Star Wars (1977)", "event": "view"}]}
    >>> frame, slots = delexicalise(evidence)
    >>> frame["items"][0]["title"]
    '[ITEM 1]'
    >>> relexicalise("Because you viewed [ITEM 1]", slots)
    'Because you viewed Star Wars (1977)'
    >>> relexicalise("Because you viewed [ITEM 2]", slots) is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from streamrec.engine.reasons._types import Evidence

#: Numbers that stand for the evidence's numbers in a frame, in order of appearance: two
#: digits, no 0 or 1, none a round or common count, so an answer that keeps one keeps it.
SENTINELS: Final = (37, 43, 59, 61, 67, 71, 73, 79, 83, 89, 97, 53)
_PLACEHOLDER = re.compile(r"\[(?:ITEM \d+|CATEGORY|TAG)\]")
_DISPLAY = {"category": "[CATEGORY]", "tag": "[TAG]"}
_CITED_KEYS = ("items", "similar_items", "bought_with", "viewed_with")
#: Evidence a prompt never shows: left out of frames, where they would only split them.
_UNSHOWN = frozenset({"item_id", "share", "score"})


class _Delexicaliser:
    def __init__(self) -> None:
        self.slots: dict[str, str] = {}
        self._titles: dict[str, str] = {}
        self._numbers = iter(SENTINELS)

    def title(self, title: str) -> str:
        if title not in self._titles:
            placeholder = f"[ITEM {len(self._titles) + 1}]"
            self._titles[title] = placeholder
            self.slots[placeholder] = title
        return self._titles[title]

    def number(self, value: float) -> float:
        if value in (0, 1):
            return value
        sentinel = next(self._numbers, None)
        if sentinel is None:  # more numbers than sentinels: keep the rest as they are
            return value
        self.slots[str(sentinel)] = str(value) if isinstance(value, int) else f"{value:g}"
        return sentinel

    def walk(self, value: Any, key: str = "") -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return self.number(value)
        if isinstance(value, str):
            if key == "title" and value.strip():
                return self.title(value)
            if key in _DISPLAY and value.strip():
                self.slots[_DISPLAY[key]] = value
                return _DISPLAY[key]
            return value
        if isinstance(value, Mapping):
            return {k: self.walk(v, str(k)) for k, v in value.items() if k not in _UNSHOWN}
        if isinstance(value, list | tuple):
            return [self.walk(v, key) for v in value]
        return value


def delexicalise(evidence: Evidence) -> tuple[dict[str, Any], dict[str, str]]:
    """The frame of ``evidence`` (titles, categories, tags and numbers replaced by
    placeholders; item ids and shares left out of what a prompt shows anyway) and the
    slots: placeholder -> value."""
    walker = _Delexicaliser()
    # Cited titles first, in the order a prompt lists them, so [ITEM 1] is the first.
    for key in _CITED_KEYS:
        entries = evidence.get(key)
        for entry in entries if isinstance(entries, list | tuple) else [entries]:
            if isinstance(entry, Mapping) and isinstance(entry.get("title"), str):
                walker.title(entry["title"])
    frame: dict[str, Any] = walker.walk(evidence)
    return frame, walker.slots


def relexicalise(answer: str, slots: Mapping[str, str]) -> str | None:
    """The answer with the slots' values put back; None when it holds a placeholder the
    slots do not fill (a frame with one item answered with "[ITEM 2]")."""
    if any(p not in slots for p in _PLACEHOLDER.findall(answer)):
        return None
    numbers = "|".join(k for k in slots if k.isdigit())
    # One pass, so a title put back ("Apollo 37") is not read again as a sentinel.
    pattern = _PLACEHOLDER.pattern + (rf"|(?<![\d.,])(?:{numbers})(?!\d)" if numbers else "")
    return re.sub(pattern, lambda m: slots.get(m.group(0), m.group(0)), answer)
