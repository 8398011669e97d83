"""Faithfulness guard: does a sentence say only what its evidence holds?

Checks, in order (each failure is one violation ``"kind: detail"``):

    empty, too_long        no text / more than ``max_chars`` characters
    quote                  a quoted span (《》 「」 "" '' “” ‘’) that is not an evidence value
    title, category        a catalog title or category that the evidence does not hold
    number                 a number (digits, English words, Chinese numerals before a
                           measure word) that is not an evidence number
    user_id, email, phone, url   personal data or links
    claim                  wording that implies another reason code ("trending", "new",
                           "bought together", ...) or a preference the user never stated
    event                  an action ("bought", "浏览过") that no cited item (nor the
                           ``bought_with`` / ``viewed_with`` session item) had; the
                           wording of an allowed claim ("bought together") is no action
    ungrounded             the sentence states none of the evidence's facts (no evidence
                           value or number, no wording of the reason's own code), e.g. a
                           model's "I'm ready to assist you"; off with require_grounding
    uncited                a reason resting on items names none of them ("Similar to this")

Evidence values (titles, categories, tags) are masked out before the number, catalog and
keyword checks, so "Trail Runner 3" or a category called "New Releases" do not trip them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streamrec.engine.reasons._types import Evidence
from streamrec.engine.reasons.claims import CLAIMS, EVENT_CLAIMS

DISPLAY_KEYS: Final = frozenset({"title", "category", "tag"})


@dataclass(frozen=True)
class GuardResult:
    """Whether a sentence passed, and why not."""

    ok: bool
    violations: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        """The violation kinds, e.g. {"title", "number"}."""
        return {v.split(":", 1)[0] for v in self.violations}


_EN_NUMBERS: Final = {  # no "one": it is mostly a pronoun ("this one")
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
_ZH_DIGITS: Final = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
                     "七": 7, "八": 8, "九": 9}  # fmt: skip
_DIGITS = re.compile(r"(?<![0-9.,])\d+(?:[.,]\d+)*(?![0-9])(%?)")
_EN_NUMBER_WORDS = re.compile(r"(?<![a-z])(" + "|".join(_EN_NUMBERS) + r")(?![a-z])")
# A numeral before a measure word; a lone 一 is mostly an article (一个/一件 = "a").
_ZH_NUMBER = re.compile(
    r"(?!一(?![零一二两三四五六七八九十百]))([零一二两三四五六七八九十百]+)(?=[件个次款位名人项条])"
)
_QUOTES = re.compile(
    r"《([^》]*)》|「([^」]*)」|『([^』]*)』|“([^”]*)”|‘([^’]*)’|\"([^\"]*)\"|(?<![\w'])'([^']*)'(?![\w])"
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(
    r"(?:https?://|www\.)\S+|(?<![\w.])[a-z0-9-]+\.(?:com|net|org|io|co|cn|info|biz|shop|app|dev|ai|me)(?![a-z])"
)
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_KEY = re.compile(r"[a-z0-9]+|[^\x00-\x7f]")
_MASK = "\x00"


class Guard:
    """The guard with a prepared catalog vocabulary; build once, check many sentences.

    Args:
        catalog_titles: every title in the catalog.
        catalog_categories: every category in the catalog.
        max_chars: the longest acceptable sentence.
        require_grounding: reject sentences that state none of the evidence's facts.

    Example:
        >>> guard = Guard(["Trail Runner 3", "Ridge Jacket"], ["running", "outdoor"])
        >>> evidence = {"items": [{"item_id": "s1", "title": "Trail Runner 3", "event": "view"}]}
        >>> guard.check("Because you viewed Trail Runner 3", evidence).ok
        True
        >>> sorted(guard.check("Because you bought Ridge Jacket", evidence).kinds)
        ['event', 'title', 'uncited', 'ungrounded']
    """

    def __init__(
        self,
        catalog_titles: Iterable[str] = (),
        catalog_categories: Iterable[str] = (),
        *,
        max_chars: int = 160,
        require_grounding: bool = True,
    ) -> None:
        self.max_chars = max_chars
        self.require_grounding = require_grounding
        self._titles = _Vocabulary()
        self._categories = _Vocabulary()
        self.update(catalog_titles, catalog_categories)

    def update(self, titles: Iterable[str] = (), categories: Iterable[str] = ()) -> None:
        """Add catalog titles and categories (e.g. from a catalog change)."""
        self._titles.add(titles)
        self._categories.add(categories)

    def check(
        self,
        text: str,
        evidence: Evidence,
        *,
        code: str | None = None,
        user_id: str | None = None,
    ) -> GuardResult:
        """Check one sentence against the evidence it claims to be written from.

        Args:
            text: the sentence.
            evidence: the reason's evidence.
            code: the reason code; inferred from the evidence's shape when None.
            user_id: the user the sentence is for; naming them is a violation.

        Returns:
            ``GuardResult(ok, violations)``.
        """
        if not text.strip():
            return GuardResult(False, ["empty: no text"])
        violations: list[str] = []
        if len(text) > self.max_chars:
            violations.append(f"too_long: {len(text)} > {self.max_chars} characters")
        shown = sorted({v.casefold() for v in _display_values(evidence)}, key=len, reverse=True)
        numbers = _evidence_numbers(evidence)
        grounded = False  # does it state any fact of the evidence?
        for span in _quoted(text):
            if any(_same_name(span, value) for value in shown):
                grounded = True
            else:
                violations.append(f"quote: {span!r} is not in the evidence")
        masked = text.casefold()
        for value in shown:
            masked = _replace_words(masked, value, _MASK)
        grounded = grounded or _MASK in masked
        violations += [f"title: {t!r} is not in the evidence" for t in self._titles.found(masked)]
        violations += [
            f"category: {c!r} is not in the evidence" for c in self._categories.found(masked)
        ]
        for found in _numbers_in(masked):
            if any(_close(found, n) for n in numbers):
                grounded = True
            else:
                violations.append(f"number: {_fmt(found)} is not in the evidence")
        violations += _personal_data(text, masked, shown, numbers, user_id)
        codes = {code or infer_code(evidence)}
        also = evidence.get("also")
        if isinstance(also, Mapping):
            codes.add(also.get("code"))
        backed: list[str] = []  # the wording of allowed claims
        for claim in CLAIMS:
            word = _first_keyword(masked, claim.all_keywords)
            if word is not None and not claim.allowed & codes:
                violations.append(f"claim: {claim.name} ({word!r}) without {claim.name} evidence")
            elif word is not None:
                grounded = True
                backed += claim.all_keywords
        events = {str(e.get("event")) for e in _cited(evidence)}
        actions = _mask_spans(masked, backed)  # "frequently bought" states no purchase
        for event, by_language in EVENT_CLAIMS.items():
            word = _first_keyword(actions, [k for ks in by_language.values() for k in ks])
            if word is not None and event not in events:
                violations.append(f"event: {word!r} but no cited item has event {event!r}")
            elif word is not None:
                grounded = True
        if self.require_grounding and not grounded:
            violations.append("ungrounded: the sentence states none of the evidence's facts")
        if self.require_grounding and not _names_a_cited_item(text, evidence, codes):
            violations.append("uncited: the sentence names none of the items it rests on")
        return GuardResult(not violations, violations)


def check(
    text: str,
    evidence: Evidence,
    catalog_titles: Iterable[str],
    catalog_categories: Iterable[str],
    max_chars: int = 160,
    *,
    code: str | None = None,
    user_id: str | None = None,
    require_grounding: bool = True,
) -> GuardResult:
    """One-off :meth:`Guard.check`; build a :class:`Guard` to check many sentences."""
    guard = Guard(
        catalog_titles,
        catalog_categories,
        max_chars=max_chars,
        require_grounding=require_grounding,
    )
    return guard.check(text, evidence, code=code, user_id=user_id)


def infer_code(evidence: Evidence) -> str | None:
    """The reason code an evidence mapping was built for, from its keys."""
    if "bought_with" in evidence:
        return "bought_together"
    if "viewed_with" in evidence:
        return "viewed_together"
    if "rank" in evidence and "half_life" in evidence:
        return "trending"
    if "items" in evidence:
        return "similar_to_recent"
    if "similar_items" in evidence:
        return "new_arrival"
    if "interactions" in evidence:
        return "popular"
    if "tag" in evidence:
        return "tag_affinity"
    if "category" in evidence and "count" in evidence:
        return "category_affinity"
    return None


class _Vocabulary:
    """Catalog names indexed by their first token, to find mentions without a full scan."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, str]] = {}  # first token -> {folded: original}

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            folded = name.casefold().strip()
            first = _KEY.search(folded)
            if first is not None and len(folded) >= 2:
                self._by_key.setdefault(first.group(), {})[folded] = name.strip()

    def found(self, text: str) -> list[str]:
        """The names (as in the catalog) that occur in the casefolded ``text``."""
        hits: set[str] = set()
        for key in set(_KEY.findall(text)):
            names = self._by_key.get(key, {})
            hits.update(original for f, original in names.items() if _has_word(text, f))
        return sorted(hits)


def _display_values(evidence: Any) -> list[str]:
    out: list[str] = []
    if isinstance(evidence, Mapping):
        for key, value in evidence.items():
            if key in DISPLAY_KEYS and isinstance(value, str) and value.strip():
                out.append(value.strip())
            else:
                out += _display_values(value)
    elif isinstance(evidence, list | tuple):
        for value in evidence:
            out += _display_values(value)
    return out


def _evidence_numbers(evidence: Any) -> list[float]:
    if isinstance(evidence, bool):
        return []
    if isinstance(evidence, int | float):
        return [float(evidence)]
    values = evidence.values() if isinstance(evidence, Mapping) else evidence
    if isinstance(evidence, Mapping | list | tuple):
        return [n for value in values for n in _evidence_numbers(value)]
    return []


def _cited(evidence: Evidence) -> list[Mapping[str, Any]]:
    entries = list(evidence.get("items") or []) + list(evidence.get("similar_items") or [])
    entries += [evidence.get("bought_with"), evidence.get("viewed_with")]
    return [e for e in entries if isinstance(e, Mapping)]


_CITING_CODES: Final = frozenset({"similar_to_recent", "bought_together", "viewed_together"})


def _names_a_cited_item(text: str, evidence: Evidence, codes: set[Any]) -> bool:
    """Whether a reason resting on items names one (its title, or less a "(1977)" tail)."""
    titles = [str(e["title"]).strip().casefold() for e in _cited(evidence) if e.get("title")]
    if not _CITING_CODES & codes or not titles:
        return True
    folded, spans = text.casefold(), _quoted(text)
    for title in titles:
        short = re.sub(r"\s*\(.*\)\s*$", "", title)
        if any(_same_name(span, title) for span in spans):
            return True
        if _has_word(folded, title) or (len(short) >= 2 and _has_word(folded, short)):
            return True
    return False


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTES.finditer(text)]


def _same_name(span: str, value: str) -> bool:
    """A quoted span names an evidence value: equal, or the value less a "(1977)" tail."""
    span = span.casefold()
    if span == value:
        return True
    return value.startswith(span) and re.fullmatch(r"\s*\(.*\)\s*", value[len(span) :]) is not None


def _numbers_in(masked: str) -> list[tuple[float, bool]]:
    found: list[tuple[float, bool]] = []
    for m in _DIGITS.finditer(masked):
        raw = m.group(0).rstrip("%")
        value = float(raw.replace(",", "")) if raw.count(".") <= 1 else float(raw.split(".")[0])
        found.append((value, m.group(1) == "%"))
    found += [(float(_EN_NUMBERS[m.group(1)]), False) for m in _EN_NUMBER_WORDS.finditer(masked)]
    found += [(float(_zh_number(m.group(1))), False) for m in _ZH_NUMBER.finditer(masked)]
    return found


def _zh_number(numeral: str) -> int:
    total, digit = 0, 0
    for char in numeral:
        if char in _ZH_DIGITS:
            digit = _ZH_DIGITS[char]
        else:  # 十 or 百
            total += max(digit, 1) * (10 if char == "十" else 100)
            digit = 0
    return total + digit


def _close(found: tuple[float, bool], evidence_number: float) -> bool:
    value, percent = found
    if abs(value - evidence_number) <= 1e-9 * max(1.0, abs(value)):
        return True
    return percent and abs(value / 100 - evidence_number) <= 0.005  # share 0.41 as "41%"


def _fmt(found: tuple[float, bool]) -> str:
    value, percent = found
    text = f"{value:g}"
    return text + "%" if percent else text


def _personal_data(
    text: str, masked: str, shown: list[str], numbers: list[float], user_id: str | None
) -> list[str]:
    out: list[str] = []
    if user_id and user_id.strip():
        uid = user_id.strip().casefold()
        explained = uid in shown or any(_close((_as_float(uid), False), n) for n in numbers)
        if _has_word(masked, uid) and not explained:  # a title like "Apollo 13" is masked
            out.append("user_id: the sentence names the user's identifier")
    if _EMAIL.search(masked):
        out.append("email: the sentence contains an e-mail address")
    for m in _PHONE.finditer(masked):
        digits = re.sub(r"\D", "", m.group(0))
        if len(digits) >= 7 and not any(_close((float(digits), False), n) for n in numbers):
            out.append("phone: the sentence contains a phone-like number")
            break
    if _URL.search(masked):
        out.append("url: the sentence contains a link")
    return out


def _as_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _first_keyword(masked: str, keywords: Iterable[str]) -> str | None:
    return next((k for k in keywords if _has_word(masked, k)), None)


def _has_word(text: str, word: str) -> bool:
    return _next_word(text, word, 0) >= 0


def _next_word(text: str, word: str, start: int) -> int:
    """Index of ``word`` in ``text`` at or after ``start``, not inside a longer ASCII word."""
    while (at := text.find(word, start)) >= 0:
        before = text[at - 1] if at else " "
        after = text[at + len(word)] if at + len(word) < len(text) else " "
        if not (_is_ascii_alnum(word[0]) and _is_ascii_alnum(before)) and not (
            _is_ascii_alnum(word[-1]) and _is_ascii_alnum(after)
        ):
            return at
        start = at + 1
    return -1


def _mask_spans(text: str, words: Iterable[str]) -> str:
    """``text`` with every occurrence of ``words`` blanked; overlapping occurrences
    ("shoppers who" and "who bought") are blanked together."""
    blank = bytearray(len(text))
    for word in set(words):
        start = 0
        while (at := _next_word(text, word, start)) >= 0:
            blank[at : at + len(word)] = b"\x01" * len(word)
            start = at + 1
    if not any(blank):
        return text
    return "".join(" " if b else c for c, b in zip(text, blank, strict=True))


def _replace_words(text: str, word: str, by: str) -> str:
    out, start = [], 0
    while (at := _next_word(text, word, start)) >= 0:
        out += [text[start:at], by]
        start = at + len(word)
    return "".join(out) + text[start:]


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()
