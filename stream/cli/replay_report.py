"""The result of ``streamrec evaluate --replay``: online (published) vs offline metrics.

Built by :func:`streamrec.stream.cli.replay_eval.run_replay_evaluation`; written as ``replay.md``
and
``replay.json`` by ``streamrec.stream.cli.evaluate``. See docs/evaluation.md, "Online replay vs
offline".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrec.engine.offline.evaluation import MetricEstimate
from streamrec.engine.offline.evaluation_report import TABLE_METRICS

__all__ = ["ReplayReport"]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _estimates(metrics: Mapping[str, MetricEstimate]) -> dict[str, dict[str, float | None]]:
    return {
        name: {"mean": _finite(est.mean), "ci95": _finite(est.half_width)}
        for name, est in metrics.items()
    }


@dataclass(frozen=True)
class ReplayReport:
    """Our model scored twice on the same users: offline full ranking, and the lists the
    real worker published after replaying each user's training events through Kafka.

    Attributes:
        dataset: What was evaluated (e.g. ``ml-100k`` or a file name).
        protocol: ``leave-last-out`` or ``time``.
        seed: Seed of training and of the user sample.
        n_test_users: Users the split could evaluate.
        n_users: Users evaluated (all, or the ``users_limit`` sample).
        n_items: Items in the offline ranking (the whole universe).
        n_train_events: Events the model was trained on (every user's).
        n_replayed_events: Training events of the evaluated users sent to Kafka.
        online: Recall/NDCG@10,20 and MRR@20 of the published lists.
        offline: The same metrics of the offline full ranking, same model and users.
        ndcg10_online_minus_offline: Per-user NDCG@10 online minus offline (paired, 95% CI).
        same_top10: Share of users whose published top 10 is the offline top 10 exactly
            (same items, same order).
        same_top20: The same for the top 20.
        rank_changes: Users whose target has another position in the online top 20 than in
            the offline top 20 (in one and not the other, or at another rank).
        users_without_list: Evaluated users for whom no list after their last training event
            arrived (counted as misses online).
        dead_letters: Replayed events the worker dead-lettered.
        lists_received: Recommendation messages consumed during the replay.
        history_length: ``STREAMREC_HISTORY_LENGTH`` of the worker.
        truncated_histories: Evaluated users with more training events than that (their
            oldest events are neither excluded nor kept online; offline excludes them all).
        events_per_s: Replayed events over the time from the first send to the last list.
        replay_seconds: That time.
        wall_seconds: The whole run (training, infrastructure, replay, scoring).
        timings: Seconds per stage.
        model_version: The trained model's version.
        chosen: The model's hyperparameters (chosen on validation).
        worker_settings: ``STREAMREC_*`` settings the worker ran with (addresses left out).
        ts_shift_ms: How far every timestamp was moved back so none lies in the future
            (0: logged timestamps as they are).
        machine: Where it ran (filled in by the caller).
    """

    dataset: str
    protocol: str
    seed: int
    n_test_users: int
    n_users: int
    n_items: int
    n_train_events: int
    n_replayed_events: int
    online: Mapping[str, MetricEstimate]
    offline: Mapping[str, MetricEstimate]
    ndcg10_online_minus_offline: MetricEstimate
    same_top10: float
    same_top20: float
    rank_changes: int
    users_without_list: int
    dead_letters: int
    lists_received: int
    history_length: int
    truncated_histories: int
    events_per_s: float
    replay_seconds: float
    wall_seconds: float
    timings: Mapping[str, float] = field(default_factory=dict)
    model_version: str = ""
    chosen: Mapping[str, float] = field(default_factory=dict)
    worker_settings: Mapping[str, str] = field(default_factory=dict)
    ts_shift_ms: int = 0
    machine: str = ""

    def relative_difference(self, metric: str) -> float:
        """``online / offline - 1`` of a metric's mean (NaN when offline is 0)."""
        offline = self.offline[metric].mean
        if offline == 0:
            return float("nan")
        return self.online[metric].mean / offline - 1.0

    def to_markdown(self) -> str:
        """Both tables, the agreement figures and the run's facts, as Markdown."""
        sample = (
            f"{self.n_users:,} of {self.n_test_users:,} test users (seeded sample)"
            if self.n_users < self.n_test_users
            else f"all {self.n_users:,} test users"
        )
        header = ["path", *(label for _, label in TABLE_METRICS)]
        lines = [
            f"## Online replay vs offline: {self.dataset}, {self.protocol} split",
            "",
            f"{sample}. Online: each user's {self.n_replayed_events:,} training events in "
            "total were produced to Kafka in time order and processed by one real worker; "
            "the list it published after the user's last training event is scored against "
            f"the held-out item. Offline: the same model ranks all {self.n_items:,} items "
            "for the same users, training items excluded. Mean ± 95% CI half-width.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
            "| offline (full ranking) | "
            + " | ".join(str(self.offline[k]) for k, _ in TABLE_METRICS)
            + " |",
            "| online (published lists) | "
            + " | ".join(str(self.online[k]) for k, _ in TABLE_METRICS)
            + " |",
            "| online / offline − 1 | "
            + " | ".join(f"{self.relative_difference(k):+.2%}" for k, _ in TABLE_METRICS)
            + " |",
            "",
            f"* NDCG@10 online − offline, paired over the same users: "
            f"{self.ndcg10_online_minus_offline.mean:+.4f} ± "
            f"{self.ndcg10_online_minus_offline.half_width:.4f}",
            f"* published top 10 identical to the offline top 10: {self.same_top10:.1%} of "
            f"users (top 20: {self.same_top20:.1%}); users whose target has another place "
            f"in the top 20: {self.rank_changes}",
            f"* users without a list: {self.users_without_list}; dead-lettered events: "
            f"{self.dead_letters}; lists received: {self.lists_received:,}",
            f"* worker history length {self.history_length} "
            f"({self.truncated_histories} users have longer training histories)",
            f"* replay: {self.n_replayed_events:,} events in {self.replay_seconds:.1f} s, "
            f"{self.events_per_s:,.0f} events/s (first send to last list)",
        ]
        if self.ts_shift_ms:
            lines.append(
                f"* timestamps moved back by {self.ts_shift_ms:,} ms so none is in the future"
            )
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.worker_settings.items()))
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        where = f" on {self.machine}" if self.machine else ""
        lines += [
            "",
            f"Model {self.model_version}; worker settings: {settings}.",
            "",
            f"Seed {self.seed}; wall time {self.wall_seconds:.0f} s{where} ({stages}).",
        ]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready (non-finite numbers become null)."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "seed": self.seed,
            "n_test_users": self.n_test_users,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train_events": self.n_train_events,
            "n_replayed_events": self.n_replayed_events,
            "online": _estimates(self.online),
            "offline": _estimates(self.offline),
            "relative_difference": {
                k: _finite(self.relative_difference(k)) for k, _ in TABLE_METRICS
            },
            "ndcg@10_online_minus_offline": {
                "mean": _finite(self.ndcg10_online_minus_offline.mean),
                "ci95": _finite(self.ndcg10_online_minus_offline.half_width),
            },
            "same_top10": self.same_top10,
            "same_top20": self.same_top20,
            "rank_changes": self.rank_changes,
            "users_without_list": self.users_without_list,
            "dead_letters": self.dead_letters,
            "lists_received": self.lists_received,
            "history_length": self.history_length,
            "truncated_histories": self.truncated_histories,
            "events_per_s": round(self.events_per_s, 1),
            "replay_seconds": round(self.replay_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "model_version": self.model_version,
            "chosen": dict(self.chosen),
            "worker_settings": dict(self.worker_settings),
            "ts_shift_ms": self.ts_shift_ms,
            "machine": self.machine,
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as indented JSON, ending with a newline."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
