"""Online item statistics: time-decayed popularity ("trending") and co-occurrence. Pure.

Trending. Each event adds 1 to its item's count, and every count halves each
``half_life_s``. The decayed count of an item at time ``now`` is
``sum_i 2 ** (-(now - t_i) / half_life)`` over its events ``t_i``. Stored as is, every
count would have to be rewritten as time passes; instead each event adds
``exp(lam * t_i)`` (``lam = ln 2 / half_life``, ``t`` in seconds since the fixed
:data:`TREND_EPOCH_MS`) and the decayed count is that sum times ``exp(-lam * now)``. The
sum grows without bound (2 ** 24 per day at a one-hour half-life), so it is kept in log
space: the stored score is ``log(sum_i exp(lam * t_i))`` and an increment is one
``logaddexp`` (:func:`add_log`). Scores are comparable across items at any time, so a
sorted set ordered by score is ordered by decayed count, and nothing ever overflows
(a score is about ``lam * t``: 6.1e3 per year at a one-hour half-life). A float64 score
carries a relative error of about 1e-16 times its size, so decayed counts are exact to
about 1e-11 at a one-hour half-life (1e-8 at one second) for decades after the epoch.

Co-occurrence. For an event on item ``x`` and the user's previous ``window`` interactions,
every distinct other item ``y`` among them is "viewed together" with ``x`` (any event
types); it is also "bought together" when both the event and ``y``'s interaction are a
purchase or an add-to-cart. Each pair counts once per event, in both directions.

Both are computed by the Redis script in ``stream/redis_store.py`` (which mirrors
:func:`cooccurrence_pairs` and uses :func:`log_weight`) and by the in-memory
:class:`ItemStatsCounter` here (the reference twin the tests compare it with).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from streamrec.engine.types import EventType, Interaction

TREND_EPOCH_MS = 1_577_836_800_000
"""2020-01-01T00:00:00Z: time zero of the trend scores (keeps them small)."""
BOUGHT_TYPES: frozenset[str] = frozenset({"purchase", "add_to_cart"})
"""Event types that count as buying for "bought together"."""
LN2 = math.log(2.0)

Together = Literal["bought", "viewed"]


@dataclass(frozen=True)
class TrendParams:
    """How trending is measured and when an item counts as trending.

    An item is trending when its decayed count is at least ``min_count`` and it is among
    the ``top_n`` items by decayed count.

    Attributes:
        half_life_s: seconds after which an event counts half.
        top_n: how many of the highest decayed counts can be trending.
        min_count: least decayed count (a quiet shop has no trending items).
    """

    half_life_s: float = 3600.0
    top_n: int = 20
    min_count: float = 3.0

    def __post_init__(self) -> None:
        if not (self.half_life_s > 0 and math.isfinite(self.half_life_s)):
            msg = f"half_life_s must be a positive number of seconds, got {self.half_life_s!r}"
            raise ValueError(msg)
        if self.top_n < 1:
            msg = f"top_n must be at least 1, got {self.top_n!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class TrendingItem:
    """One trending item: its decayed event count and its rank (1 = highest)."""

    item_id: str
    count: float
    rank: int


@dataclass(frozen=True)
class CoPairs:
    """The other items an event co-occurs with (each pair is counted in both directions).

    Attributes:
        viewed: items of the window, any event type, most recent first, distinct.
        bought: the subset bought together (both sides a purchase or add-to-cart).
    """

    viewed: tuple[str, ...] = ()
    bought: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemStats:
    """The online statistics a recommendation batch may cite, as plain data.

    Attributes:
        trending: trending items by id (:func:`trending`).
        half_life_s: the half-life behind the trending counts.
        bought_together: item id -> {other item id: times bought together}, for the items
            in the batch's users' sessions.
        viewed_together: the same for "viewed together".
    """

    trending: Mapping[str, TrendingItem] = field(default_factory=dict)
    half_life_s: float = 3600.0
    bought_together: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    viewed_together: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @functools.cached_property
    def ranked_trending(self) -> tuple[str, ...]:
        """The trending item ids, best rank first (sorted once per batch, not per user)."""
        return tuple(sorted(self.trending, key=lambda i: self.trending[i].rank))


def decay_rate(half_life_s: float) -> float:
    """``ln 2 / half_life_s``: the exponential decay rate per second."""
    return LN2 / half_life_s


def log_weight(ts_ms: int, half_life_s: float) -> float:
    """The log-space weight of one event at ``ts_ms``: ``lam * (t - epoch)`` in seconds.

    Example:
        >>> log_weight(TREND_EPOCH_MS + 3_600_000, 3600.0) == math.log(2)
        True
    """
    return decay_rate(half_life_s) * (ts_ms - TREND_EPOCH_MS) / 1000.0


def add_log(score: float | None, weight: float) -> float:
    """``log(exp(score) + exp(weight))`` without overflow; ``None`` is an empty count.

    Example:
        >>> round(add_log(math.log(3.0), math.log(5.0)), 12) == round(math.log(8.0), 12)
        True
    """
    if score is None or score == -math.inf:
        return weight
    high, low = (score, weight) if score >= weight else (weight, score)
    return high + math.log1p(math.exp(low - high))


def decayed_count(score: float, now_ms: int, half_life_s: float) -> float:
    """The decayed event count at ``now_ms`` of a log-space ``score``.

    Example:
        >>> one = log_weight(TREND_EPOCH_MS, 60.0)  # one event at the epoch
        >>> decayed_count(one, TREND_EPOCH_MS + 60_000, 60.0)
        0.5
    """
    return math.exp(score - log_weight(now_ms, half_life_s))


def trending(
    scores: Iterable[tuple[str, float]], now_ms: int, params: TrendParams
) -> dict[str, TrendingItem]:
    """The trending items among (item id, log-space score) pairs, by id.

    Args:
        scores: log-space trend scores (any order; e.g. the top of the Redis sorted set).
        now_ms: the time to decay the counts to.
        params: half-life, ``top_n`` and ``min_count``.

    Returns:
        Items ranked by decayed count (ties by id), the first ``top_n`` of them whose
        count is at least ``min_count``, with their rank among all given items.
    """
    ordered = sorted(scores, key=lambda s: (-s[1], s[0]))
    out: dict[str, TrendingItem] = {}
    for rank, (item_id, score) in enumerate(ordered[: params.top_n], start=1):
        count = decayed_count(score, now_ms, params.half_life_s)
        if count < params.min_count:
            break
        out[item_id] = TrendingItem(item_id, count, rank)
    return out


def trending_in_log(
    item_ids: Sequence[str], ts_ms: Sequence[int], now_ms: int, params: TrendParams
) -> dict[str, TrendingItem]:
    """:func:`trending` at ``now_ms`` over a log of events (one per (item, time) pair), as
    the online counter would report it after counting them: offline evaluation and
    training use it for the ranker's trending candidates.

    Events after ``now_ms`` are not counted.
    """
    ids = np.asarray(item_ids, dtype=object)
    ts = np.asarray(ts_ms, dtype=np.int64)
    keep = ts <= now_ms
    if not keep.any():
        return {}
    names, inverse = np.unique(ids[keep].astype(str), return_inverse=True)
    weights = decay_rate(params.half_life_s) * (ts[keep] - TREND_EPOCH_MS) / 1000.0
    high = np.full(len(names), -np.inf)
    np.maximum.at(high, inverse, weights)
    total = np.zeros(len(names))
    np.add.at(total, inverse, np.exp(weights - high[inverse]))
    scores = high + np.log(total)
    return trending(zip(names.tolist(), scores.tolist(), strict=True), now_ms, params)


def cooccurrence_pairs(
    item_id: str, event_type: EventType | str, previous: Sequence[Interaction], window: int = 5
) -> CoPairs:
    """Which pairs one event increments.

    Args:
        item_id: the event's item.
        event_type: the event's type.
        previous: the user's interactions before this event, oldest first.
        window: how many of the most recent previous interactions pair with it (0: none).

    Returns:
        The distinct other items of the window, most recent first; the bought ones only
        when the event itself is a purchase or add-to-cart.

    Example:
        >>> hist = [Interaction("a", "purchase", 1), Interaction("b", "view", 2)]
        >>> cooccurrence_pairs("c", "add_to_cart", hist)
        CoPairs(viewed=('b', 'a'), bought=('a',))
    """
    recent = previous[-window:] if window > 0 else ()
    viewed: dict[str, None] = {}
    bought: dict[str, None] = {}
    buying = event_type in BOUGHT_TYPES
    for interaction in reversed(recent):
        other = interaction.item_id
        if other == item_id:
            continue
        viewed.setdefault(other)
        if buying and interaction.type in BOUGHT_TYPES:
            bought.setdefault(other)
    return CoPairs(tuple(viewed), tuple(bought))


def session_items(history: Sequence[Interaction], window: int = 5) -> list[str]:
    """The distinct items of the last ``window`` interactions, most recent first.

    Example:
        >>> session_items([Interaction("a", "view", 1), Interaction("b", "view", 2),
        ...                Interaction("a", "click", 3)])
        ['a', 'b']
    """
    recent = history[-window:] if window > 0 else ()
    return list(dict.fromkeys(i.item_id for i in reversed(recent)))


def best_partner(
    candidate: str,
    session: Sequence[str],
    table: Mapping[str, Mapping[str, int]],
    min_count: int = 1,
) -> tuple[str, int] | None:
    """The session item that co-occurs most often with ``candidate``, and how often.

    Args:
        candidate: the recommended item.
        session: the user's session items, most recent first (ties go to the most recent).
        table: item id -> {other item id: count} (:attr:`ItemStats.bought_together`, ...).
        min_count: least count to say anything.

    Returns:
        (session item id, count), or None when no session item reaches ``min_count``.
    """
    best: tuple[str, int] | None = None
    for item_id in session:
        if item_id == candidate:
            continue
        count = int(table.get(item_id, {}).get(candidate, 0))
        if count >= min_count and (best is None or count > best[1]):
            best = (item_id, count)
    return best


class ItemStatsCounter:
    """In-memory reference of the Redis item statistics (tests, offline replays).

    Args:
        params: trending parameters (the half-life is used for the scores).
        window: co-occurrence window (previous interactions per event).
    """

    def __init__(self, params: TrendParams | None = None, window: int = 5) -> None:
        self.params = params or TrendParams()
        self.window = window
        self.scores: dict[str, float] = {}
        self.viewed: dict[str, dict[str, int]] = {}
        self.bought: dict[str, dict[str, int]] = {}

    def add(
        self,
        item_id: str,
        event_type: EventType | str,
        ts_ms: int,
        previous: Sequence[Interaction] = (),
    ) -> CoPairs:
        """Count one (new, de-duplicated) event; returns the pairs it incremented."""
        weight = log_weight(ts_ms, self.params.half_life_s)
        self.scores[item_id] = add_log(self.scores.get(item_id), weight)
        pairs = cooccurrence_pairs(item_id, event_type, previous, self.window)
        for table, others in ((self.viewed, pairs.viewed), (self.bought, pairs.bought)):
            for other in others:
                row = table.setdefault(item_id, {})
                row[other] = row.get(other, 0) + 1
                back = table.setdefault(other, {})
                back[item_id] = back.get(item_id, 0) + 1
        return pairs

    def decayed(self, item_id: str, now_ms: int) -> float:
        """The item's decayed count at ``now_ms`` (0 for an unknown item)."""
        score = self.scores.get(item_id)
        return 0.0 if score is None else decayed_count(score, now_ms, self.params.half_life_s)

    def trending(self, now_ms: int) -> dict[str, TrendingItem]:
        """:func:`trending` over every counted item."""
        return trending(self.scores.items(), now_ms, self.params)

    def stats(self, session: Iterable[str], now_ms: int, co_limit: int = 50) -> ItemStats:
        """What the Redis store's ``item_stats`` reads for a batch: trending items and,
        for each session item, its ``co_limit`` most frequent partners in both tables
        (ties as a Redis ``ZREVRANGE``: the greater id first)."""
        ids = list(dict.fromkeys(session))

        def top(table: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for item_id in ids:
                row = sorted(table.get(item_id, {}).items(), key=lambda kv: (kv[1], kv[0]))
                if row:
                    out[item_id] = dict(reversed(row[-co_limit:]))
            return out

        return ItemStats(
            trending=self.trending(now_ms),
            half_life_s=self.params.half_life_s,
            bought_together=top(self.bought),
            viewed_together=top(self.viewed),
        )
