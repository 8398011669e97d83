"""Asynchronous reason upgrades: model-written sentences for lists already published.

The worker publishes every list at once with template reasons. A reason writer, off the
event path, takes the published lists and asks a language model for the top ``top_n``
items' sentences, many prompts per model call; each answer passes the
:class:`~streamrec.engine.reasons.guard.Guard` or is dropped, and a list gets an update
naming the items whose reasons were upgraded (:class:`ReasonUpgrade`). Consumers that
ignore updates keep the template sentences, which are true too.

* **Cache by prompt.** A prompt holds only the facts a sentence may state (and the
  language), so equal facts share one sentence: the cache is keyed by
  :func:`prompt_key`, not by the raw evidence (whose shares and scores differ per list).
  Rejections are cached too, so a prompt the model fails is not asked again.
* **Frames** (:mod:`~streamrec.engine.reasons.frames`, on by default). The model writes
  one sentence per shape of facts, titles and numbers as placeholders, and each list's
  values are put back before the guard checks it: a few hundred frames per language
  instead of a prompt per list, so a CPU model's cache fills in minutes. Items of one list
  with the same frame get the template's different phrasings as examples
  (``build_prompt(variant=...)``), so they get different sentences.
* **Bounded work.** :class:`WorkQueue` keeps at most ``capacity`` lists and drops the
  oldest first (a late upgrade is worth less than a fresh one), counting what it drops;
  the writer takes the newest lists first.

Outcomes per item (:data:`UPGRADE_OUTCOMES`)::

    upgraded    the model's sentence, written for this list, accepted by the guard
    cached      a sentence accepted earlier for the same prompt
    rejected    the guard rejected the answer (now, or earlier for the same prompt), or
                the answer has a placeholder its frame does not fill (rule ``placeholder``)
    error       the backend failed or gave nothing usable
    timeout     the backend ran out of time
    repeated    the sentence equals another of the list's sentences: left as it was

Pure: no I/O; the backend is injected (:data:`CompleteBatch`).
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamrec.engine.reasons._types import Evidence, GenerationTimeoutError, Language
from streamrec.engine.reasons.frames import delexicalise, relexicalise
from streamrec.engine.reasons.generator import clean
from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.prompt import Prompt, build_prompt
from streamrec.engine.types import Recommendation

CompleteBatch = Callable[[Sequence[Prompt], float], list[str | None]]
"""A batch backend: (prompts, timeout in seconds) -> one answer (or None) per prompt, in
order; raises :class:`GenerationTimeoutError` when it ran out of time for all of them."""

UPGRADE_OUTCOMES = ("upgraded", "cached", "rejected", "error", "timeout", "repeated")


def prompt_key(prompt: Prompt) -> str:
    """The cache key of a prompt: its facts, example, prefix and language (the system
    message is the same for every prompt of one language and length limit)."""
    payload = f"{prompt.language}\x1f{prompt.max_chars}\x1f{prompt.user}\x1f{prompt.prefix}"
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class UpgradedItem:
    """One item whose reason a model rewrote: its id, rank (1-based) and new sentence."""

    item_id: str
    rank: int
    reason: str
    reason_code: str


@dataclass(frozen=True)
class ReasonUpgrade:
    """The upgrade of one published list: which list, and its upgraded items."""

    recommendation_id: str
    user_id: str
    trigger_event_id: str
    list_generated_at: int
    language: Language
    items: tuple[UpgradedItem, ...]


@dataclass
class UpgradeStats:
    """Outcomes of one :meth:`ReasonUpgrader.upgrade` call, per item and per guard rule."""

    outcomes: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    model_calls: int = 0
    prompts_asked: int = 0


T = TypeVar("T")


@dataclass(frozen=True)
class Wanted:
    """An item of a list to upgrade: its index, prompt and prompt key, and its frame's
    evidence and slots (None without frames)."""

    n: int
    prompt: Prompt
    key: str
    frame: Evidence | None = None
    slots: dict[str, str] | None = None


class WorkQueue(Generic[T]):
    """A bounded queue that is taken from the newest end and drops its oldest entries when
    full, counting them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            msg = f"capacity must be at least 1, got {capacity}"
            raise ValueError(msg)
        self._items: deque[T] = deque()
        self.capacity = capacity
        self.dropped = 0

    def put(self, item: T) -> None:
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)

    def take(self, n: int) -> list[T]:
        """Up to ``n`` entries, newest first: when the writer is behind, the lists a user
        is looking at now get their sentences first, and the oldest age out."""
        return [self._items.pop() for _ in range(min(n, len(self._items)))]

    def __len__(self) -> int:
        return len(self._items)


class ReasonUpgrader:
    """Writes model sentences for the top items of published lists.

    Args:
        complete: the batch backend.
        guard: checks every sentence (build it with the catalog's titles and categories).
        language: the language of the sentences.
        top_n: how many items of each list (from the top) get a model sentence.
        batch_size: most prompts per backend call.
        call_timeout_s: the most one backend call may take.
        cache_size: prompts remembered (sentences and rejections), least recently used
            dropped first.
        frames: ask for sentence frames (placeholders for titles and numbers, filled in
            per list) rather than one sentence per distinct set of facts.
    """

    def __init__(
        self,
        complete: CompleteBatch,
        guard: Guard,
        *,
        language: Language = "en",
        top_n: int = 3,
        batch_size: int = 4,
        call_timeout_s: float = 60.0,
        cache_size: int = 50_000,
        frames: bool = True,
    ) -> None:
        if top_n < 1 or batch_size < 1:
            msg = f"top_n and batch_size must be at least 1, got {top_n} and {batch_size}"
            raise ValueError(msg)
        self.complete = complete
        self.guard = guard
        self.language: Language = language
        self.top_n = top_n
        self.batch_size = batch_size
        self.call_timeout_s = call_timeout_s
        self.cache_size = cache_size
        self.frames = frames
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._learned: dict[str, str | None] = {}  # since the last take_learned()

    def preload(self, answers: Mapping[str, str | None]) -> None:
        """Put answers kept from earlier (prompt key -> answer, None: rejected) into the
        cache, e.g. the frames a previous writer stored."""
        for key, answer in answers.items():
            self._cache[key] = answer
            self._cache.move_to_end(key)
        self._trim()

    def take_learned(self) -> dict[str, str | None]:
        """The answers and rejections learned since the last call (to store them)."""
        learned, self._learned = self._learned, {}
        return learned

    def upgrade(self, lists: Sequence[Recommendation]) -> tuple[list[ReasonUpgrade], UpgradeStats]:
        """The upgrades of ``lists`` (a list with no upgraded item gets none) and the
        outcomes, asking the model for what is not cached first. Prompts are asked once
        however many items share them."""
        stats = UpgradeStats()
        wanted = [self.plan(rec) for rec in lists]
        prompts = {w.key: w.prompt for keys in wanted for w in keys if not self.known(w.key)}
        fresh: dict[str, str] = {}
        chunks = list(prompts.items())
        for start in range(0, len(chunks), self.batch_size):
            answers = self.generate(chunks[start : start + self.batch_size], stats)
            self.learn(answers, fresh)
        upgrades = []
        for rec, keys in zip(lists, wanted, strict=True):
            upgrade = self.assemble(rec, keys, fresh, stats)
            if upgrade is not None:
                upgrades.append(upgrade)
        return upgrades, stats

    def plan(self, rec: Recommendation) -> list[Wanted]:
        """The prompts of a list's top items."""
        keys: list[Wanted] = []
        variants: Counter[str] = Counter()  # items of this list per frame so far
        for n, item in enumerate(rec.items[: self.top_n]):
            if not self.frames:
                prompt = self._prompt(item.reason_code, item.evidence)
                keys.append(Wanted(n, prompt, prompt_key(prompt)))
                continue
            frame, slots = delexicalise(item.evidence)
            prompt = self._prompt(item.reason_code, frame)
            key = prompt_key(prompt)
            variant = variants[key]
            variants[key] += 1
            if variant:  # another item of this list has this frame: another wording
                prompt = self._prompt(item.reason_code, frame, variant)
                key = prompt_key(prompt)
            keys.append(Wanted(n, prompt, key, frame, slots))
        return keys

    def _prompt(self, code: str, evidence: Evidence, variant: int = 0) -> Prompt:
        limit = self.guard.max_chars
        return build_prompt(code, evidence, self.language, max_chars=limit, variant=variant)

    def known(self, key: str) -> bool:
        """Whether the prompt has an answer (or a rejection) already."""
        return key in self._cache

    def generate(
        self, prompts: Sequence[tuple[str, Prompt]], stats: UpgradeStats
    ) -> dict[str, tuple[str, str | None]]:
        """One backend call for ``prompts`` (key, prompt): the outcome per key
        (``upgraded`` with the cleaned answer, ``error`` or ``timeout``). Touches no
        state of the upgrader but ``stats``: safe to run in another thread."""
        stats.model_calls += 1
        stats.prompts_asked += len(prompts)
        try:
            answers = self.complete([p for _, p in prompts], self.call_timeout_s)
        except GenerationTimeoutError:
            return {key: ("timeout", None) for key, _ in prompts}
        except Exception:  # a failing backend costs the upgrade, never the list
            return {key: ("error", None) for key, _ in prompts}
        out: dict[str, tuple[str, str | None]] = {}
        for (key, _), raw in zip(prompts, answers, strict=True):
            text = clean(raw) if isinstance(raw, str) else ""
            out[key] = ("upgraded", text) if text else ("error", None)
        return out

    def learn(self, answers: Mapping[str, tuple[str, str | None]], fresh: dict[str, str]) -> None:
        """Cache the answers of :meth:`generate`; ``fresh`` gets each key's outcome, which
        :meth:`assemble` counts at the first use."""
        for key, (outcome, text) in answers.items():
            if text is not None:
                self._remember(key, text)
            fresh[key] = outcome

    def assemble(
        self,
        rec: Recommendation,
        keys: Iterable[Wanted],
        fresh: dict[str, str],
        stats: UpgradeStats,
    ) -> ReasonUpgrade | None:
        """The upgrade of one list from the cache (None when no item got a sentence);
        every sentence guarded for this list's item and user. Outcomes go to ``stats``."""
        texts = [item.reason for item in rec.items]
        upgraded: list[UpgradedItem] = []
        for want in keys:
            n, key = want.n, want.key
            item = rec.items[n]
            outcome = fresh.get(key, "cached")
            if outcome in ("error", "timeout", "dropped"):
                stats.outcomes[outcome] += 1
                continue
            text, failed = self._checked(rec, want, outcome, texts, stats)
            if failed is not None:
                # Rejected, too long with these titles, or said already: another wording
                # of the frame, written for another item, may fit.
                other = self._other_wording(rec, want, texts)
                if other is None:
                    stats.outcomes[failed] += 1
                    continue
                text, outcome = other, "cached"
            texts[n] = text
            stats.outcomes[outcome] += 1
            fresh[key] = "cached"  # other items with this prompt reuse the sentence
            upgraded.append(UpgradedItem(item.item_id, item.rank, text, item.reason_code))
        if not upgraded:
            return None
        return ReasonUpgrade(
            rec.recommendation_id,
            rec.user_id,
            rec.trigger_event_id,
            rec.generated_at,
            self.language,
            tuple(upgraded),
        )

    def _checked(
        self,
        rec: Recommendation,
        want: Wanted,
        outcome: str,
        texts: Sequence[str],
        stats: UpgradeStats,
    ) -> tuple[str, str | None]:
        """The item's own cached sentence, filled in, and None; or "" and why it cannot
        be used (``rejected``, ``repeated``)."""
        answer = self._cache.get(want.key)
        if answer is None:
            return "", "rejected"
        self._cache.move_to_end(want.key)
        text = answer if want.slots is None else relexicalise(answer, want.slots)
        if text is None:  # a placeholder the frame does not fill: never usable
            stats.rejections["placeholder"] += 1
            self._forget(want.key)
            return "", "rejected"
        # The sentence is checked against this item's evidence and user, even when
        # cached: equal prompts mean equal facts, but not the same user.
        item = rec.items[want.n]
        result = self.guard.check(text, item.evidence, code=item.reason_code, user_id=rec.user_id)
        if not result.ok:
            stats.rejections.update(result.kinds)
            if outcome == "upgraded" and result.kinds - {"too_long"}:
                # The same answer would fail again (a frame may fit shorter titles).
                self._forget(want.key)
            return "", "rejected"
        if text in texts[: want.n] or text in texts[want.n + 1 :]:
            return "", "repeated"
        return text, None

    def _other_wording(self, rec: Recommendation, want: Wanted, texts: Sequence[str]) -> str | None:
        """A cached answer to another variant of the item's frame that, filled in,
        passes the guard and repeats no sentence of the list (None without frames)."""
        if want.frame is None or want.slots is None:
            return None
        item = rec.items[want.n]
        for variant in range(self.top_n):
            other = prompt_key(self._prompt(item.reason_code, want.frame, variant))
            answer = self._cache.get(other)
            text = None if other == want.key or answer is None else relexicalise(answer, want.slots)
            if text is None or text in texts:
                continue
            result = self.guard.check(
                text, item.evidence, code=item.reason_code, user_id=rec.user_id
            )
            if result.ok:
                return text
        return None

    def _forget(self, key: str) -> None:
        """Mark a prompt's answer unusable: it is not asked again."""
        self._cache[key] = None
        self._learned[key] = None

    def _remember(self, key: str, text: str | None) -> None:
        self._learned[key] = text
        self._cache[key] = text
        self._cache.move_to_end(key)
        self._trim()

    def _trim(self) -> None:
        """Drop the least recently used prompts beyond ``cache_size``."""
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
