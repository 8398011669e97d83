"""Template sentences for reasons: several phrasings per code, English and Chinese.

A sentence is ``str.format`` of a phrasing from :mod:`streamrec.engine.reasons.phrases` with fields
taken from the evidence alone:

    cite      the cited items with their actions: "viewed A and bought B" / "浏览过《A》"
    titles    the cited titles: "A and B" / "《A》和《B》"
    verb      the one action shared by all cited items ("viewed" / "浏览过"); absent if mixed
    habit     the secondary signal under ``also``: "3 of your last 5 items were in Y"
    partner   the session item of ``bought_with`` / ``viewed_with``: "A" / "《A》"; ``verb``
              is then the user's action on it
    window    the trending half-life: "1 hour" / "1小时"
    category, tag, count, of_recent, rank, n (= interactions)

The phrasing is chosen deterministically from a hash of (item_id, code);
:meth:`TemplateGenerator.render_list` also makes sure no sentence repeats in one list.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from string import Formatter
from typing import Any

from streamrec.engine.reasons import phrases
from streamrec.engine.reasons._types import (
    LANGUAGES,
    REASON_CODES,
    Evidence,
    Language,
    ReasonRequest,
    UnknownReasonCodeError,
)

_KEYS = set(REASON_CODES)


#: Most distinct (reason, field names) combinations whose phrasings a generator memoises.
TIER_CACHE_SIZE = 4096
#: Most (item, reason) phrasing hashes, and citations' fields, a generator memoises (the
#: same items recur).
HASH_CACHE_SIZE = 1 << 16


class TemplateGenerator:
    """Renders reasons from their evidence with varied, deterministic phrasings.

    Args:
        language: "en" or "zh" (Simplified Chinese).
        salt: mixed into the phrasing hash; change it to reshuffle phrasings.
        max_chars: the longest sentence :meth:`render` and :meth:`render_list` choose
            while a shorter phrasing is left (the guard's limit; long titles can make a
            full phrasing longer).

    Raises:
        ValueError: an unsupported language.

    Example:
        >>> zh = TemplateGenerator("zh")
        >>> items = [{"item_id": "s1", "title": "Trail Runner 3", "event": "view"}]
        >>> zh.canonical("similar_to_recent", {"items": items})
        '因为你浏览过《Trail Runner 3》'
    """

    def __init__(self, language: Language = "en", *, salt: str = "", max_chars: int = 160) -> None:
        if language not in LANGUAGES:
            msg = f"language must be one of {LANGUAGES}, got {language!r}"
            raise ValueError(msg)
        self.language: Language = language
        self.salt = salt
        self.max_chars = max_chars
        self._table = phrases.EN if language == "en" else phrases.ZH
        self._tier_cache: dict[tuple[str, frozenset[str]], list[list[str]]] = {}
        self._habit_cache: dict[frozenset[tuple[str, type, Any]], str | None] = {}
        self._hash_cache: dict[tuple[str, str], int] = {}
        self._cite_cache: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def phrasings(self, code: str, evidence: Evidence) -> list[list[str]]:
        """Every sentence the evidence supports, in tiers, best first; the last tier is
        the generic one that names nothing.

        Raises:
            UnknownReasonCodeError: ``code`` is not a known reason code.
        """
        fields, tiers = self._formats(code, evidence)
        return [[fmt.format_map(fields) for fmt in tier] for tier in tiers]

    def canonical(self, code: str, evidence: Evidence) -> str:
        """The first phrasing: the same sentence for the same evidence, always."""
        fields, tiers = self._formats(code, evidence)
        return tiers[0][0].format_map(fields)

    def render(self, code: str, evidence: Evidence, *, item_id: str = "") -> str:
        """One sentence, its phrasing picked by a hash of (item_id, code) in the best tier
        (moving on to the next phrasings, then tiers, while it is over ``max_chars``)."""
        fields, tiers = self._formats(code, evidence)
        return _first_unused(fields, tiers, self._hash(item_id, code), set(), self.max_chars)

    def render_list(
        self,
        reasons: Sequence[tuple[str, Evidence]],
        item_ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Sentences for one recommendation list, none repeated.

        Each item starts from its hashed phrasing in the best tier and moves on to the
        next unused one, then to the next tiers (shorter phrasings, then generic ones that
        name nothing); a phrasing longer than ``max_chars`` is skipped while a shorter one
        is left. Only when all of them are taken (more than ~20 items with the same
        evidence in one list) does a sentence repeat.

        Args:
            reasons: (code, evidence) per item, in rank order.
            item_ids: the recommended items (same length); without them the phrasing
                hash uses the evidence itself.

        Returns:
            One sentence per reason, in the same order.

        Raises:
            ValueError: ``item_ids`` and ``reasons`` differ in length.
            UnknownReasonCodeError: an unknown reason code.
        """
        if item_ids is not None and len(item_ids) != len(reasons):
            msg = f"item_ids has {len(item_ids)} entries, reasons has {len(reasons)}"
            raise ValueError(msg)
        used: set[str] = set()
        out: list[str] = []
        for n, (code, evidence) in enumerate(reasons):
            key = item_ids[n] if item_ids is not None else _canonical_json(evidence)
            fields, tiers = self._formats(code, evidence)
            text = _first_unused(fields, tiers, self._hash(key, code), used, self.max_chars)
            used.add(text)
            out.append(text)
        return out

    def generate(self, items: Sequence[ReasonRequest]) -> list[str | None]:
        """:class:`~streamrec.engine.reasons.generator.ReasonGenerator` interface: one sentence per
        request, no repeats among requests with the same ``list_id``; requests in another
        language than this generator's are rendered in theirs."""
        out: list[str | None] = [None] * len(items)
        groups: dict[tuple[Language, str], list[int]] = {}
        for n, item in enumerate(items):
            groups.setdefault((item.language, item.list_id), []).append(n)
        for (language, _), positions in groups.items():
            gen = (
                self
                if language == self.language
                else TemplateGenerator(language, salt=self.salt, max_chars=self.max_chars)
            )
            texts = gen.render_list(
                [(items[p].code, items[p].evidence) for p in positions],
                [items[p].item_id for p in positions],
            )
            for p, text in zip(positions, texts, strict=True):
                out[p] = text
        return out

    def _formats(self, code: str, evidence: Evidence) -> tuple[dict[str, str], list[list[str]]]:
        """The evidence's fields and the phrasings (unformatted) they can fill, by tier."""
        if code not in _KEYS:
            msg = f"unknown reason code {code!r}; expected one of {sorted(_KEYS)}"
            raise UnknownReasonCodeError(msg)
        key = code
        if code == "popular" and evidence.get("user_history") == 0:
            key = "popular_new_user"
        fields = self._fields(evidence)
        return fields, self._tiers(key, frozenset(fields))

    def _tiers(self, key: str, names: frozenset[str]) -> list[list[str]]:
        """The phrasings of ``key`` (then the generic ones) that ``names`` can fill, by
        tier; memoised per generator (few distinct field sets occur)."""
        found = self._tier_cache.get((key, names))
        if found is None:
            found = []
            for tier in (*self._table[key], *self._table["generic"]):
                usable = [fmt for fmt in tier if _needs(fmt) <= names]
                if usable:
                    found.append(usable)
            if len(self._tier_cache) < TIER_CACHE_SIZE:
                self._tier_cache[(key, names)] = found
        return found

    def _hash(self, key: str, code: str) -> int:
        found = self._hash_cache.get((key, code))
        if found is None:
            digest = hashlib.blake2b(f"{self.salt}\x1f{key}\x1f{code}".encode(), digest_size=8)
            found = int.from_bytes(digest.digest(), "big")
            if len(self._hash_cache) < HASH_CACHE_SIZE:
                self._hash_cache[(key, code)] = found
        return found

    def _fields(self, evidence: Evidence) -> dict[str, str]:
        # On the hot path (every recommended item): plain dicts skip the ABC check.
        fields: dict[str, str] = {}
        get = evidence.get
        for name in ("category", "tag"):
            value = get(name)
            if isinstance(value, str) and value:
                fields[name] = value
        for name, source in _NUMBER_FIELDS:
            value = get(source)
            if value is not None and _is_number(value):
                fields[name] = str(value)
        half_life = get("half_life")
        if half_life is not None:
            window = self._window(half_life)
            if window:
                fields["window"] = window
        for source in ("bought_with", "viewed_with"):
            partner = get(source)
            if partner is not None and _is_mapping(partner) and _nonempty(partner.get("title")):
                fields.update(self._partner_fields(partner))
        cited = get("items") or get("similar_items")
        if cited:
            entries = [c for c in cited if _is_mapping(c) and _nonempty(c.get("title"))]
            if entries:
                fields.update(self._cite_fields(entries))
        also = get("also")
        if also is not None and _is_mapping(also):
            habit = self._habit(also)
            if habit:
                fields["habit"] = habit
        return fields

    def _cite_fields(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The citation's fields (read only by the caller), memoised by its (event,
        title) pairs: a list's items cite the same few history items."""
        key = tuple((str(e.get("event", "")), str(e["title"])) for e in entries)
        found = self._cite_cache.get(key)
        if found is None:
            found = self._cite_fields_of(entries)
            if len(self._cite_cache) < HASH_CACHE_SIZE:
                self._cite_cache[key] = found
        return found

    def _cite_fields_of(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        groups: dict[str, list[str]] = {}
        for entry in entries:
            groups.setdefault(str(entry.get("event", "")), []).append(str(entry["title"]))
        titles = [str(e["title"]) for e in entries]
        if self.language == "en":
            cite = " and ".join(
                f"{phrases.EN_VERBS.get(event, phrases.EN_OTHER_VERB)} {' and '.join(group)}"
                for event, group in groups.items()
            )
            fields = {"cite": cite, "titles": " and ".join(titles)}
            if len(groups) == 1:
                fields["verb"] = phrases.EN_VERBS.get(next(iter(groups)), phrases.EN_OTHER_VERB)
            return fields
        cite = "，还".join(
            phrases.ZH_CLAUSES.get(event, phrases.ZH_OTHER_CLAUSE).format(titles=_zh_titles(group))
            for event, group in groups.items()
        )
        fields = {"cite": cite, "titles": _zh_titles(titles)}
        if len(groups) == 1:
            fields["verb"] = phrases.ZH_VERBS.get(next(iter(groups)), phrases.ZH_OTHER_VERB)
        return fields

    def _partner_fields(self, partner: Mapping[str, Any]) -> dict[str, str]:
        title, event = str(partner["title"]), str(partner.get("event", ""))
        if self.language == "en":
            verb = phrases.EN_VERBS.get(event, phrases.EN_OTHER_VERB)
            return {"partner": title, "verb": verb}
        return {
            "partner": _zh_titles([title]),
            "verb": phrases.ZH_VERBS.get(event, phrases.ZH_OTHER_VERB),
        }

    def _window(self, half_life: object) -> str | None:
        if not isinstance(half_life, Mapping):
            return None
        value, unit = half_life.get("value"), half_life.get("unit")
        units = phrases.EN_UNITS if self.language == "en" else phrases.ZH_UNITS
        if not _is_number(value) or unit not in units:
            return None
        singular, plural = units[str(unit)]
        name = singular if value == 1 else plural
        number = str(value) if isinstance(value, int) else f"{value:g}"
        return f"{number} {name}" if self.language == "en" else f"{number}{name}"

    def _habit(self, also: Mapping[str, Any]) -> str | None:
        try:
            key: Any = frozenset((k, type(v), v) for k, v in also.items())
            return self._habit_cache[key]
        except TypeError:  # an unhashable value: no memo
            key = None
        except KeyError:
            pass
        table = phrases.EN_HABITS if self.language == "en" else phrases.ZH_HABITS
        fmt = table.get(str(also.get("code")))
        habit = None
        if fmt is not None:
            fields = self._fields({k: v for k, v in also.items() if k != "also"})
            habit = fmt.format_map(fields) if _needs(fmt) <= fields.keys() else None
        if key is not None and len(self._habit_cache) < TIER_CACHE_SIZE:
            self._habit_cache[key] = habit
        return habit


def render(code: str, evidence: Evidence) -> str:
    """The canonical English sentence for a reason, built only from ``evidence``.

    Raises:
        UnknownReasonCodeError: ``code`` is not a known reason code.
    """
    return _ENGLISH.canonical(code, evidence)


def _zh_titles(titles: Sequence[str]) -> str:
    quoted = [f"《{t}》" for t in titles]
    if len(quoted) <= 2:
        return "和".join(quoted)
    return "、".join(quoted[:-1]) + "和" + quoted[-1]


@functools.cache
def _needs(fmt: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in Formatter().parse(fmt) if name)


def _first_unused(
    fields: Mapping[str, str], tiers: list[list[str]], start: int, used: set[str], max_chars: int
) -> str:
    """The first unused phrasing within ``max_chars``, else the first unused one, else the
    hashed phrasing of the best tier (a repeat)."""
    too_long: str | None = None
    for tier in tiers:
        for k in range(len(tier)):
            text = tier[(start + k) % len(tier)].format_map(fields)
            if text in used:
                continue
            if len(text) <= max_chars:
                return text
            too_long = too_long or text
    if too_long is not None:
        return too_long
    best = tiers[0]
    return best[start % len(best)].format_map(fields)


_NUMBER_FIELDS = (
    ("count", "count"),
    ("of_recent", "of_recent"),
    ("rank", "rank"),
    ("n", "interactions"),
)


def _is_mapping(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _canonical_json(evidence: Evidence) -> str:
    return json.dumps(evidence, sort_keys=True, ensure_ascii=False, default=str)


_ENGLISH = TemplateGenerator("en")
