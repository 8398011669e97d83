"""Offline evaluation: splits, full-ranking metrics with confidence intervals, baselines.

Every test user's held-out item is ranked against **all** items (never sampled negatives).
Items the user already interacted with in the training part are removed from the ranking
(``exclude_seen``); a target the user had seen before therefore counts as a miss, and how
often that happened is reported. Ties are broken by item order, as a stable top-k would:
the rank of the target is the number of items scoring higher, plus the number scoring the
same that come before it in ``item_ids``.

Metrics per user, averaged over users with a 95% normal-approximation confidence interval
(``1.96 * std / sqrt(n)``): ``recall@k`` (the hit rate, one target per user),
``ndcg@k`` (``1 / log2(rank + 2)`` for a 0-based rank below k), ``mrr@K`` for the largest k.
``coverage@k`` is the share of all items that appear in at least one user's top k.
With ``keep_top=k`` the result also holds every user's top-k columns (``top_items``), for
list metrics such as :mod:`streamrec.engine.offline.list_metrics`.

Example:
    >>> split = leave_last_out(events)  # doctest: +SKIP
    >>> pop = PopularityRecommender.fit(split.train, split.item_ids())  # doctest: +SKIP
    >>> result = evaluate_full_ranking(pop, split, split.item_ids())  # doctest: +SKIP
    >>> print(format_markdown({"popularity": result}))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "EvalResult",
    "MetricEstimate",
    "PopularityRecommender",
    "Recommender",
    "Split",
    "evaluate_full_ranking",
    "format_markdown",
    "leave_last_out",
    "metrics_from_ranks",
    "time_split",
]

logger = logging.getLogger(__name__)

#: Scores every item for a batch of users, given their histories (item ids, oldest first)
#: and the matching event types: (u histories, u type lists) -> (u, n_items) scores, columns
#: in the order of the evaluation's ``item_ids``. Higher is better; -inf means "never".
Recommender = Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], npt.NDArray[np.floating]]

_Z95 = 1.96


def _in_time_order(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values("ts", kind="stable").reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split of an event log with one held-out target per test user.

    Attributes:
        train: Training events, sorted by (ts, original order).
        test: One event per test user (the target), sorted by user id.
        kind: How the split was made: ``"leave_last_out"``, ``"time"`` or ``"session"``.
        test_fraction: For time and session splits, the share after the cut.
        context: Events that are test users' history but not training data: the earlier
            events of sessions after a session split's cut, which a worker sees online and
            a model never trained on.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    kind: Literal["leave_last_out", "time", "session"] = "leave_last_out"
    test_fraction: float = 0.2
    context: pd.DataFrame | None = None

    def validation(self) -> Split:
        """The same kind of split applied to the training part, for tuning.

        For leave-last-out this holds out each user's second-to-last item.
        """
        if self.kind == "leave_last_out":
            return leave_last_out(self.train)
        if self.kind == "session":
            return session_split(self.train, self.test_fraction)
        return time_split(self.train, self.test_fraction)

    def item_ids(self) -> list[str]:
        """All items in train and test, sorted: the universe a full ranking ranks."""
        parts = [self.train["item_id"], self.test["item_id"]]
        if self.context is not None:
            parts.append(self.context["item_id"])
        ids = pd.concat(parts).unique()
        return sorted(str(i) for i in ids)

    def histories(self) -> tuple[list[list[str]], list[list[str]]]:
        """Each test user's history (training events, then context events) as items and
        event types, oldest first, in test order."""
        return self._histories

    @cached_property
    def _histories(self) -> tuple[list[list[str]], list[list[str]]]:
        seen = self.train if self.context is None else pd.concat([self.train, self.context])
        grouped = seen.groupby("user_id", sort=False)
        items = grouped["item_id"].agg(list)
        types = grouped["type"].agg(list)
        users = self.test["user_id"].tolist()
        return (
            [list(map(str, items.get(u, []))) for u in users],
            [list(map(str, types.get(u, []))) for u in users],
        )


def leave_last_out(events: pd.DataFrame) -> Split:
    """Hold out each user's last event (by time, ties by original order).

    Users with fewer than 2 events are dropped from both parts.

    Args:
        events: An events table.

    Returns:
        A split whose test has each remaining user's last event and whose train has all
        their other events.
    """
    ordered = _in_time_order(events)
    counts = ordered.groupby("user_id")["user_id"].transform("size")
    kept = ordered[counts >= 2]
    is_last = ~kept.duplicated("user_id", keep="last")
    test = kept[is_last].sort_values("user_id", kind="stable").reset_index(drop=True)
    train = kept[~is_last].reset_index(drop=True)
    return Split(train=train, test=test, kind="leave_last_out")


def _cut(n: int, test_fraction: float) -> int:
    """How many of ``n`` time-ordered things come before the cut."""
    if not 0.0 < test_fraction < 1.0:
        msg = f"test_fraction must be in (0, 1), got {test_fraction!r}"
        raise ValueError(msg)
    return int(round(n * (1.0 - test_fraction)))


def time_split(events: pd.DataFrame, test_fraction: float = 0.2) -> Split:
    """Split at a global time cut: the last ``test_fraction`` of events form the test period.

    Each user with events on both sides gets one target: their first event after the cut
    (next-item prediction). Users with no training events (cold users) or no test events
    are not evaluated; all events before the cut are training events.

    Args:
        events: An events table.
        test_fraction: Share of events (by count) after the cut, in (0, 1).

    Returns:
        The split.

    Raises:
        ValueError: ``test_fraction`` is outside (0, 1).
    """
    ordered = _in_time_order(events)
    cut = _cut(len(ordered), test_fraction)
    train = ordered.iloc[:cut].reset_index(drop=True)
    after = ordered.iloc[cut:]
    after = after[after["user_id"].isin(set(train["user_id"]))]
    test = after.drop_duplicates("user_id", keep="first")
    test = test.sort_values("user_id", kind="stable").reset_index(drop=True)
    return Split(train=train, test=test, kind="time", test_fraction=test_fraction)


def session_split(events: pd.DataFrame, test_fraction: float = 0.2) -> Split:
    """Split a log whose users are sessions at a time cut over sessions.

    Sessions are ordered by their first event; the last ``test_fraction`` of them are the
    test period. Each test session with two or more events is evaluated: its last event is
    the target and its earlier events are its history (``context``), seen as a worker sees
    them online, never trained on. Training events are the sessions before the cut.

    Args:
        events: An events table whose ``user_id`` names sessions.
        test_fraction: Share of sessions (by count) after the cut, in (0, 1).

    Returns:
        The split.

    Raises:
        ValueError: ``test_fraction`` is outside (0, 1).
    """
    ordered = _in_time_order(events)
    starts = ordered.drop_duplicates("user_id", keep="first")["user_id"].tolist()
    cut = _cut(len(starts), test_fraction)
    later = set(starts[cut:])
    in_test = ordered["user_id"].isin(later)
    train = ordered[~in_test].reset_index(drop=True)
    after = ordered[in_test]
    after = after[after.groupby("user_id")["user_id"].transform("size") >= 2]
    is_last = ~after.duplicated("user_id", keep="last")
    test = after[is_last].sort_values("user_id", kind="stable").reset_index(drop=True)
    context = after[~is_last].reset_index(drop=True)
    return Split(train, test, kind="session", test_fraction=test_fraction, context=context)


@dataclass(frozen=True)
class MetricEstimate:
    """A mean over users with its 95% confidence interval half-width."""

    mean: float
    half_width: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


@dataclass(frozen=True)
class EvalResult:
    """Full-ranking metrics of one recommender on one split.

    Attributes:
        metrics: ``recall@k``, ``ndcg@k`` and ``mrr@K`` estimates.
        coverage: ``coverage@k``: share of all items in at least one user's top k.
        n_users: Users evaluated.
        n_items: Items ranked for each user.
        n_seen_targets: Users whose target was already in their history (counted as misses
            when seen items are excluded).
        top_items: (n_users, keep_top) columns of each user's top items, best first, -1 where
            fewer were rankable; None unless asked for. Not compared by ``==``.
    """

    metrics: Mapping[str, MetricEstimate]
    coverage: Mapping[str, float]
    n_users: int
    n_items: int
    n_seen_targets: int = 0
    top_items: npt.NDArray[np.intp] | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, name: str) -> MetricEstimate:
        return self.metrics[name]

    def as_dict(self) -> dict[str, float]:
        """Flat ``{metric: mean, metric_ci95: half width, coverage@k: ...}`` for reports."""
        out: dict[str, float] = {}
        for name, est in self.metrics.items():
            out[name] = est.mean
            out[f"{name}_ci95"] = est.half_width
        out.update(self.coverage)
        out["n_users"] = float(self.n_users)
        return out


def _estimate(values: npt.NDArray[np.float64]) -> MetricEstimate:
    n = len(values)
    if n == 0:
        return MetricEstimate(mean=float("nan"), half_width=float("nan"))
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return MetricEstimate(mean=float(values.mean()), half_width=_Z95 * std / math.sqrt(n))


def _top_k_mask(scores: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.bool_]:
    """(u, n) mask of each row's top k finite scores, ties broken by column order."""
    k = min(k, scores.shape[1])
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    above = scores > kth[:, None]
    tied = scores == kth[:, None]
    room = k - above.sum(axis=1)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    result: npt.NDArray[np.bool_] = chosen & np.isfinite(scores)
    return result


def _top_k_columns(scores: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.intp]:
    """(u, n) -> (u, k) columns of each row's top k, best first, ties by column; -1 pads."""
    mask = _top_k_mask(scores, k)
    rows, cols = np.nonzero(mask)  # row-major, columns ascending within a row
    starts = np.concatenate([[0], np.cumsum(mask.sum(axis=1))[:-1]])
    out = np.full((scores.shape[0], k), -1, dtype=np.intp)
    out[rows, np.arange(rows.size) - starts[rows]] = cols
    picked = np.where(out >= 0, np.take_along_axis(scores, np.maximum(out, 0), 1), -np.inf)
    order = np.argsort(-picked, axis=1, kind="stable")
    result: npt.NDArray[np.intp] = np.take_along_axis(out, order, 1)
    return result


def metrics_from_ranks(
    ranks: npt.ArrayLike, ks: Sequence[int] = (10, 20)
) -> dict[str, MetricEstimate]:
    """Recall@k and NDCG@k for each k, and MRR@max(ks), from each user's target rank.

    The formulas of :func:`evaluate_full_ranking`, for ranks found any other way (e.g. a
    target's position in a published list): a rank of ``max(ks)`` or more is a miss.

    Args:
        ranks: (u,) each user's 0-based rank of their target; any value >= max(ks) (e.g.
            the number of items) for a target that is not ranked at all.
        ks: Cut-offs, all >= 1.

    Returns:
        ``recall@k``, ``ndcg@k`` and ``mrr@K`` (K = max(ks)) estimates, in that order.

    Raises:
        ValueError: A cut-off below 1, or ``ranks`` is not one-dimensional.

    Example:
        >>> m = metrics_from_ranks([0, 1, 1682], ks=(10,))
        >>> round(m["recall@10"].mean, 4), round(m["mrr@10"].mean, 4)
        (0.6667, 0.5)
    """
    if not ks or min(ks) < 1:
        msg = f"ks must be positive cut-offs, got {tuple(ks)!r}"
        raise ValueError(msg)
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1:
        msg = f"ranks must have shape (u,), got shape {r.shape}"
        raise ValueError(msg)
    metrics: dict[str, MetricEstimate] = {}
    for k in ks:
        hit = r < k
        metrics[f"recall@{k}"] = _estimate(hit.astype(np.float64))
        metrics[f"ndcg@{k}"] = _estimate(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0))
    k_max = max(ks)
    metrics[f"mrr@{k_max}"] = _estimate(np.where(r < k_max, 1.0 / (r + 1.0), 0.0))
    return metrics


def evaluate_full_ranking(
    recommend: Recommender,
    split: Split,
    item_ids: Sequence[str],
    ks: Sequence[int] = (10, 20),
    *,
    exclude_seen: bool = True,
    batch_size: int = 512,
    keep_top: int = 0,
) -> EvalResult:
    """Rank every test user's target against all items and aggregate the metrics.

    Args:
        recommend: Scores (u, n_items) for a batch of users' histories; see
            :data:`Recommender`.
        split: The split; histories are the test users' training events.
        item_ids: The n_items items ranked, in the column order of ``recommend``'s scores.
        ks: Cut-offs for recall, NDCG and coverage; MRR uses the largest.
        exclude_seen: Remove each user's history items from their ranking.
        batch_size: Users scored per call of ``recommend`` (bounds memory).
        keep_top: Keep each user's top ``keep_top`` columns in ``top_items`` (0: don't).

    Returns:
        The metrics.

    Raises:
        ValueError: A target is not in ``item_ids``, ``recommend`` returned the wrong shape,
            or a score is NaN.
    """
    if not ks or min(ks) < 1:
        msg = f"ks must be positive cut-offs, got {tuple(ks)!r}"
        raise ValueError(msg)
    index = {str(item): i for i, item in enumerate(item_ids)}
    n_items = len(index)
    targets_raw = split.test["item_id"].astype(str).tolist()
    missing = [t for t in targets_raw if t not in index]
    if missing:
        msg = (
            f"item_ids must contain every test target; {len(missing)} missing, e.g. {missing[0]!r}"
        )
        raise ValueError(msg)
    targets = np.asarray([index[t] for t in targets_raw], dtype=np.int64)
    histories, types = split.histories()
    n_users = len(targets)
    ranks = np.empty(n_users, dtype=np.int64)
    covered = {k: np.zeros(n_items, dtype=bool) for k in ks}
    n_seen = 0
    top = np.full((n_users, keep_top), -1, dtype=np.intp) if keep_top > 0 else None
    for start in range(0, n_users, batch_size):
        stop = min(start + batch_size, n_users)
        raw = recommend(histories[start:stop], types[start:stop])
        scores = np.array(raw, dtype=np.float64)
        if scores.shape != (stop - start, n_items):
            msg = f"recommend must return shape ({stop - start}, {n_items}), got {scores.shape}"
            raise ValueError(msg)
        if np.isnan(scores).any():
            msg = "recommend returned NaN scores"
            raise ValueError(msg)
        rows = np.arange(stop - start)
        tgt = targets[start:stop]
        if exclude_seen:
            for r, hist in enumerate(histories[start:stop]):
                seen = [index[i] for i in hist if i in index]
                scores[r, seen] = -np.inf
                n_seen += int(tgt[r] in set(seen))
        target_scores = scores[rows, tgt]
        higher = (scores > target_scores[:, None]).sum(axis=1)
        cols = np.arange(n_items)[None, :]
        tied_before = ((scores == target_scores[:, None]) & (cols < tgt[:, None])).sum(axis=1)
        batch_ranks = higher + tied_before
        batch_ranks[np.isneginf(target_scores)] = n_items  # an excluded target is a miss
        ranks[start:stop] = batch_ranks
        for k in ks:
            covered[k] |= _top_k_mask(scores, k).any(axis=0)
        if top is not None:
            top[start:stop] = _top_k_columns(scores, keep_top)
    metrics = metrics_from_ranks(ranks, ks)
    coverage = {f"coverage@{k}": float(covered[k].mean()) if n_items else 0.0 for k in ks}
    if n_seen:
        logger.info("%d of %d targets were already in the user's history", n_seen, n_users)
    return EvalResult(
        metrics=metrics,
        coverage=coverage,
        n_users=n_users,
        n_items=n_items,
        n_seen_targets=n_seen,
        top_items=top,
    )


@dataclass(frozen=True, eq=False)
class PopularityRecommender:
    """Baseline: every user gets the same ranking, by training interaction count.

    Attributes:
        item_ids: The items, in score-column order.
        counts: (n,) training interaction counts.
    """

    item_ids: tuple[str, ...]
    counts: npt.NDArray[np.float64] = field(repr=False)

    @classmethod
    def fit(cls, events: pd.DataFrame, item_ids: Sequence[str]) -> PopularityRecommender:
        """Count each item's training events.

        Args:
            events: Training events.
            item_ids: The items to score, in column order.

        Returns:
            The baseline.
        """
        ids = tuple(str(i) for i in item_ids)
        per_item = events["item_id"].astype(str).value_counts()
        counts: npt.NDArray[np.float64] = np.asarray(
            per_item.reindex(list(ids), fill_value=0).to_numpy(), dtype=np.float64
        )
        return cls(item_ids=ids, counts=counts)

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float64]:
        """(u, n) scores: the item counts, the same for every user."""
        return np.tile(self.counts, (len(histories), 1))


def format_markdown(results: Mapping[str, EvalResult]) -> str:
    """A Markdown table with one row per recommender: mean ± 95% CI half-width.

    Args:
        results: Evaluation results by recommender name.

    Returns:
        The table, ending with a newline.
    """
    if not results:
        return ""
    first = next(iter(results.values()))
    metric_names = list(first.metrics)
    coverage_names = list(first.coverage)
    header = ["model", *metric_names, *coverage_names, "users"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for name, result in results.items():
        cells = [name]
        cells += [str(result.metrics[m]) if m in result.metrics else "" for m in metric_names]
        cells += [
            f"{result.coverage[c]:.3f}" if c in result.coverage else "" for c in coverage_names
        ]
        cells.append(str(result.n_users))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
