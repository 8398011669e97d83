"""Which lists the reason writer can upgrade now, which wait for the model, and what the
model answers next.

A model call takes seconds on a CPU; a cached sentence takes microseconds. So the writer
never makes a list whose sentences are all cached wait behind a model call: a list whose
prompts are all known (answered, rejected, or failed) is upgraded at once, and a list
with an unknown prompt waits while a separate task asks the model, newest prompts first.
Once every prompt of a waiting list is known, it is upgraded. Both the waiting lists and
the prompts to ask are bounded; what is dropped is counted.

Pure: no I/O and no threads; the writer runs :meth:`ReasonUpgrader.generate` elsewhere and
hands its answers to :meth:`UpgradeScheduler.answered`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping

from streamrec.engine.reasons.prompt import Prompt
from streamrec.engine.reasons.upgrade import ReasonUpgrader, Wanted
from streamrec.engine.types import Recommendation

#: The outcomes of :meth:`ReasonUpgrader.generate` that leave a prompt without an answer
#: for the lists that wanted it, and ``dropped``: the prompt fell out of the queue.
FAILED = frozenset({"error", "timeout", "dropped"})

Planned = tuple[Recommendation, list[Wanted]]


class UpgradeScheduler:
    """Lists waiting for prompts, and the prompts to ask.

    Args:
        upgrader: plans the lists' prompts and holds the cache.
        capacity: most lists waiting (the oldest dropped first); prompts to ask are
            bounded at ``capacity`` times the upgrader's ``top_n``.
    """

    def __init__(self, upgrader: ReasonUpgrader, capacity: int) -> None:
        self.upgrader = upgrader
        self.capacity = capacity
        self.fresh: dict[str, str] = {}  # outcome per key since asked, until first used
        self.dropped_items = 0  # items of waiting lists dropped when full
        self._waiting: deque[Planned] = deque()
        self._asking: OrderedDict[str, Prompt] = OrderedDict()
        self._in_flight: set[str] = set()

    def add(self, lists: Iterable[Recommendation]) -> list[Planned]:
        """Plan ``lists``: those whose prompts are all known are returned, to upgrade now;
        the others wait, and their unknown prompts are queued for the model."""
        ready: list[Planned] = []
        for rec in lists:
            wanted = self.upgrader.plan(rec)
            unknown = [w for w in wanted if not self._known(w.key)]
            if not unknown:
                ready.append((rec, wanted))
                continue
            if len(self._waiting) >= self.capacity:
                _, oldest = self._waiting.popleft()
                self.dropped_items += len(oldest)
            self._waiting.append((rec, wanted))
            for w in unknown:
                if w.key not in self._in_flight:
                    self._asking[w.key] = w.prompt
                    self._asking.move_to_end(w.key)
        while len(self._asking) > self.capacity * self.upgrader.top_n:
            key, _ = self._asking.popitem(last=False)
            self.fresh[key] = "dropped"
        return ready

    def next_prompts(self, n: int) -> list[tuple[str, Prompt]]:
        """Up to ``n`` prompts to ask now, newest first; they are in flight until
        :meth:`answered`."""
        taken = [self._asking.popitem(last=True) for _ in range(min(n, len(self._asking)))]
        self._in_flight.update(key for key, _ in taken)
        return taken

    def answered(self, answers: Mapping[str, tuple[str, str | None]]) -> list[Planned]:
        """Take the model's answers (:meth:`ReasonUpgrader.generate`); returns the waiting
        lists now ready to upgrade, oldest first."""
        self._in_flight.difference_update(answers)
        self.upgrader.learn(answers, self.fresh)
        return self.ready()

    def ready(self) -> list[Planned]:
        """The waiting lists whose prompts are all known now (removed from waiting)."""
        still: deque[Planned] = deque()
        ready: list[Planned] = []
        for planned in self._waiting:
            done = all(self._known(w.key) for w in planned[1])
            (ready if done else still).append(planned)
        self._waiting = still
        return ready

    def tidy(self) -> None:
        """Forget the outcomes no waiting list wants (call it after upgrading the ready
        lists): answers stay in the upgrader's cache, and a failed prompt is asked again
        by the next list that wants it."""
        wanted = {w.key for _, ws in self._waiting for w in ws}
        self.fresh = {k: v for k, v in self.fresh.items() if k in wanted}

    @property
    def waiting(self) -> int:
        """Lists waiting for the model."""
        return len(self._waiting)

    def _known(self, key: str) -> bool:
        return self.upgrader.known(key) or self.fresh.get(key) in FAILED
