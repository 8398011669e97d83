"""The result of ``streamrec evaluate``: every model on one split, as Markdown and JSON.

Built by :func:`streamrec.engine.offline.evaluation_runner.run_evaluation`; the PNG chart is drawn
by the
stream layer (``streamrec.stream.cli.evaluate``) from the same object, so the engine needs no
plotting
library.

Example:
    >>> report = run_evaluation(events, None, "leave-last-out", 42)  # doctest: +SKIP
    >>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrec.engine.offline.evaluation import EvalResult, MetricEstimate

__all__ = ["TABLE_METRICS", "EvaluationReport", "ModelResult"]

#: Metrics of the main table, in column order, with their printed names.
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("recall@10", "Recall@10"),
    ("recall@20", "Recall@20"),
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("mrr@20", "MRR@20"),
)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if _finite(value) is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class ModelResult:
    """One model's test metrics and how it was tuned.

    Attributes:
        name: Model name (see :data:`streamrec.engine.offline.evaluation_runner.MODEL_NAMES`).
        result: Full-ranking metrics on the test split.
        diversity: ILD@10 in our model's item-vector space (None when ours was not trained).
        novelty: Novelty@10 (mean ``-log2`` smoothed popularity share).
        chosen: The hyperparameters it was evaluated with (chosen on validation if a grid).
        validation_ndcg: Validation NDCG@10 of ``chosen`` (None when nothing was tuned).
        grid_size: Grid points tried on validation.
        fit_seconds: Tuning plus the final fit.
        eval_seconds: Scoring and ranking all test users.
        ndcg_vs_ours: This model's NDCG@10 minus ours, paired over the same users (mean ± 95%
            CI half-width); None for ours or when ours was not evaluated.
        notes: How it was trained, when that needs saying (e.g. epochs, early stopping).
    """

    name: str
    result: EvalResult
    diversity: float | None
    novelty: float
    chosen: Mapping[str, float | str]
    validation_ndcg: float | None
    grid_size: int
    fit_seconds: float
    eval_seconds: float
    ndcg_vs_ours: MetricEstimate | None = None
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: metrics as ``{"mean", "ci95"}``, coverage, list metrics, tuning."""
        r = self.result
        return {
            "metrics": {
                name: {"mean": _finite(est.mean), "ci95": _finite(est.half_width)}
                for name, est in r.metrics.items()
            },
            "coverage": dict(r.coverage),
            "ild@10": _finite(self.diversity),
            "novelty@10": _finite(self.novelty),
            "ndcg@10_minus_ours": None
            if self.ndcg_vs_ours is None
            else {
                "mean": _finite(self.ndcg_vs_ours.mean),
                "ci95": _finite(self.ndcg_vs_ours.half_width),
            },
            "n_users": r.n_users,
            "n_items": r.n_items,
            "n_seen_targets": r.n_seen_targets,
            "chosen": dict(self.chosen),
            "validation_ndcg@10": _finite(self.validation_ndcg),
            "grid_size": self.grid_size,
            "fit_seconds": round(self.fit_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "notes": self.notes,
        }


@dataclass(frozen=True)
class EvaluationReport:
    """Every requested model evaluated on the same split.

    Attributes:
        dataset: What was evaluated (e.g. ``ml-100k`` or a file name).
        protocol: ``leave-last-out``, ``time`` or ``session``.
        test_fraction: The time split's test share (None for leave-last-out).
        seed: Seed of every seeded step.
        n_events: Events in the log.
        n_train_events: Events in the training part.
        n_test_users: Users with a held-out target.
        n_items: Items each target was ranked against (the whole universe).
        results: One entry per evaluated model, in the requested order.
        skipped: Models not evaluated, with the reason (also logged as a warning).
        wall_seconds: Time of the whole run.
        machine: Where it ran (filled in by the caller; empty when unknown).
    """

    dataset: str
    protocol: str
    test_fraction: float | None
    seed: int
    n_events: int
    n_train_events: int
    n_test_users: int
    n_items: int
    results: tuple[ModelResult, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    machine: str = ""

    def __getitem__(self, name: str) -> ModelResult:
        for model in self.results:
            if model.name == name:
                return model
        msg = f"no result for model {name!r}; have {', '.join(m.name for m in self.results)}"
        raise KeyError(msg)

    def to_markdown(self) -> str:
        """The results table, the tuning table and the run's facts, as Markdown."""
        split = self.protocol + (
            f" (test fraction {self.test_fraction:g})" if self.test_fraction is not None else ""
        )
        lines = [
            f"## Offline evaluation: {self.dataset}, {split} split",
            "",
            f"{self.n_test_users:,} test users; each target is ranked against all "
            f"{self.n_items:,} items (no sampled negatives), the user's training items "
            "excluded. Mean ± 95% CI half-width over users.",
            "",
        ]
        seen = max((m.result.n_seen_targets for m in self.results), default=0)
        if seen and self.n_test_users:
            share = seen / self.n_test_users
            lines += [
                f"{seen:,} of {self.n_test_users:,} targets ({share:.1%}) were already in "
                "the user's training history (a repeat interaction): with seen items "
                f"excluded they are misses for every model, so recall@k is at most "
                f"{1 - share:.3f} here.",
                "",
            ]
        held_out = (
            "the last training sessions by time, each on its last event"
            if self.protocol == "session"
            else "each user's last training event held out"
        )
        header = ["model", *(label for _, label in TABLE_METRICS)]
        header += ["coverage@10", "coverage@20", "ILD@10", "novelty@10", "ΔNDCG@10 vs ours"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for m in self.results:
            cells = [m.name]
            cells += [str(m.result.metrics[key]) for key, _ in TABLE_METRICS]
            cells += [_fmt(m.result.coverage.get("coverage@10"))]
            cells += [_fmt(m.result.coverage.get("coverage@20"))]
            cells += [_fmt(m.diversity), _fmt(m.novelty, 2)]
            delta = m.ndcg_vs_ours
            cells += ["-" if delta is None else f"{delta.mean:+.4f} ± {delta.half_width:.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "ILD@10: mean pairwise cosine distance within each top-10, measured in *our* "
            "model's item-vector space for every model. Novelty@10: mean -log2 of each "
            "listed item's add-one smoothed share of training interactions. ΔNDCG@10 vs "
            "ours: the model's NDCG@10 minus ours on the same users (paired, 95% CI); an "
            "interval that excludes 0 is a difference beyond the noise of this test set.",
            "",
            f"### Tuning (validation: {held_out})",
            "",
            "| model | chosen | validation NDCG@10 | grid | fit + tune s | eval s |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for m in self.results:
            chosen = ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.chosen.items()
            )
            lines.append(
                f"| {m.name} | {chosen or '-'} | {_fmt(m.validation_ndcg, 4)} | "
                f"{m.grid_size} | {m.fit_seconds:.1f} | {m.eval_seconds:.1f} |"
            )
        lines.append("")
        for m in self.results:
            if m.notes:
                lines += [f"**{m.name}**: {m.notes}.", ""]
        for name, reason in self.skipped.items():
            lines += [f"Skipped **{name}**: {reason}", ""]
        where = f" on {self.machine}" if self.machine else ""
        lines.append(
            f"{self.n_events:,} events ({self.n_train_events:,} for training), seed "
            f"{self.seed}; wall time {self.wall_seconds:.0f} s{where}."
        )
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready (non-finite numbers become null)."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "n_events": self.n_events,
            "n_train_events": self.n_train_events,
            "n_test_users": self.n_test_users,
            "n_items": self.n_items,
            "ranking": "full (all items), seen items excluded",
            "models": {m.name: m.as_dict() for m in self.results},
            "skipped": dict(self.skipped),
            "wall_seconds": round(self.wall_seconds, 3),
            "machine": self.machine,
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as indented JSON, ending with a newline."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
