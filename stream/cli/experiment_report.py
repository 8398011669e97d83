"""``streamrec experiment report``: read an experiment's counts from Redis, compare the
arms (:func:`streamrec.engine.serving.experiment_stats.compare`) and draw the metric over time per
arm."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamrec.engine.serving.experiment_stats import Comparison, compare
from streamrec.engine.serving.experiments import HOLDOUT, Experiment
from streamrec.stream.redis_store import EXPERIMENT_PER_USER, RedisStore

__all__ = [
    "METRICS",
    "ArmSummary",
    "ExperimentReport",
    "cumulative",
    "plot_report",
    "read_report",
    "rebucket",
]

#: (event type, metric name) of the conversions the report compares.
METRICS = (("click", "CTR"), ("add_to_cart", "add-to-cart rate"), ("purchase", "purchase rate"))


@dataclass
class ArmSummary:
    """One arm's counts: per user (for the tests over users) and per minute of event time."""

    name: str
    per_user: dict[str, dict[str, int]]
    series: dict[int, dict[str, int]]
    distinct_items: int

    def total(self, what: str) -> int:
        return sum(minute.get(what, 0) for minute in self.series.values())

    @property
    def users(self) -> int:
        return len(self.per_user["lists"])

    def rate(self, what: str, per: str = "lists") -> float:
        denominator = self.total(per)
        return self.total(what) / denominator if denominator else float("nan")

    def arrays(self, what: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(successes, lists) per user, users in a fixed order."""
        lists = self.per_user["lists"]
        users = sorted(lists)
        return (
            np.asarray([self.per_user[what].get(u, 0) for u in users], dtype=np.int64),
            np.asarray([lists[u] for u in users], dtype=np.int64),
        )


@dataclass
class ExperimentReport:
    experiment: Experiment
    arms: dict[str, ArmSummary]
    catalog_size: int
    comparisons: list[Comparison] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as text lines (the holdout's row only when it has one or had lists)."""
        names = [v.name for v in self.experiment.variants]
        held = self.experiment.holdout > 0 or self.arms[HOLDOUT].total("lists") > 0
        out = [f"experiment {self.experiment.name}: variants {', '.join(names)}"]
        out.append(
            "arm | users | lists | CTR | add-to-cart | purchase | coverage | "
            "reason fallbacks | mean latency"
        )
        for name in [*names, HOLDOUT] if held else names:
            arm = self.arms[name]
            coverage = arm.distinct_items / self.catalog_size if self.catalog_size else np.nan
            latency = arm.rate("latency_ms", "published")
            out.append(
                f"{name} | {arm.users:,} | {arm.total('lists'):,} | "
                f"{_rate(arm.rate('click'), '.4f')} | {_rate(arm.rate('add_to_cart'), '.4f')} | "
                f"{_rate(arm.rate('purchase'), '.4f')} | "
                f"{_rate(coverage, '.1%')} ({arm.distinct_items:,} items) | "
                f"{_rate(arm.rate('fallbacks', 'items'), '.1%')} | "
                + ("n/a" if np.isnan(latency) else f"{latency:.0f} ms")
            )
        for r in self.comparisons:
            c, t = r.rates
            lift = f"{r.lift:+.1%}" if np.isfinite(r.lift) else "n/a"
            out.append(
                f"{r.metric}: {r.control} {c:.4f}, {r.treatment} {t:.4f}; lift {lift} "
                f"(95% CI {r.lift_ci[0]:+.1%} .. {r.lift_ci[1]:+.1%}); p {r.p_value:.3g} over "
                f"users (delta method), exact p {r.p_exact:.3g} over lists (Fisher), "
                f"bootstrap p {_p(r.p_bootstrap)}, two-proportion p {r.p_two_proportion:.3g} "
                f"over lists; SRM p {r.srm_p:.3g}"
            )
            out.append(f"  {r.verdict}")
        return out


def _rate(value: float, spec: str) -> str:
    return "n/a" if np.isnan(value) else format(value, spec)


def _p(value: float, rounds: int = 2000) -> str:
    return f"< {1 / rounds:.1g}" if value == 0 else f"{value:.3g}"


async def read_report(store: RedisStore, experiment: Experiment) -> ExperimentReport:
    """Every arm's stored counts, and the control (first variant) against each other."""
    arms = {}
    for name in [*(v.name for v in experiment.variants), HOLDOUT]:
        per_user = {
            what: await store.experiment_counts(experiment.name, name, what)
            for what in EXPERIMENT_PER_USER
        }
        series: dict[int, dict[str, int]] = defaultdict(dict)
        for key, value in (await store.experiment_counts(experiment.name, name, "series")).items():
            minute, _, what = key.partition(":")
            series[int(minute)][what] = value
        distinct = await store.experiment_coverage(experiment.name, name)
        arms[name] = ArmSummary(name, per_user, dict(series), distinct)
    catalog, _ = await store.catalog_snapshot()
    report = ExperimentReport(experiment, arms, sum(1 for i in catalog if i.available))
    control = experiment.variants[0]
    for treatment in experiment.variants[1:]:
        total = control.share + treatment.share
        for what, metric in METRICS:
            report.comparisons.append(
                compare(
                    metric,
                    (control.name, *arms[control.name].arrays(what)),
                    (treatment.name, *arms[treatment.name].arrays(what)),
                    (control.share / total, treatment.share / total),
                )
            )
    return report


def cumulative(
    series: Mapping[int, Mapping[str, int]], what: str, per: str = "lists"
) -> tuple[list[int], list[float]]:
    """Minutes with lists, and the cumulative ``what`` per ``per`` up to each."""
    minutes = sorted(m for m, counts in series.items() if counts.get(per))
    done = total = 0
    rates = []
    for m in minutes:
        done += series[m].get(what, 0)
        total += series[m][per]
        rates.append(done / total)
    return minutes, rates


def rebucket(series: Mapping[int, Mapping[str, int]], step: int) -> dict[int, dict[str, int]]:
    """Per-minute counts summed into buckets of ``step`` minutes (keyed by first minute)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for minute, counts in series.items():
        bucket = out[minute - minute % step]
        for what, n in counts.items():
            bucket[what] = bucket.get(what, 0) + n
    return dict(out)


def plot_report(report: ExperimentReport, path: Path) -> None:
    """A PNG: each arm's cumulative CTR, add-to-cart and purchase rates over event time,
    and the lists it served per minute."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    names = [v.name for v in report.experiment.variants]
    minutes = [m for name in names for m in report.arms[name].series]
    step = max(1, (max(minutes) - min(minutes)) // 400) if minutes else 1  # <= ~400 points
    fig, axes = plt.subplots(len(METRICS) + 1, 1, figsize=(9, 10), sharex=True)
    for name in names:
        series = rebucket(report.arms[name].series, step)
        for ax, (what, metric) in zip(axes, METRICS, strict=False):
            minutes, rates = cumulative(series, what)
            ax.plot(_times(minutes), rates, marker="o", markersize=3, label=name)
            ax.set_ylabel(f"{metric}\n(cumulative)")
        minutes = sorted(series)
        axes[-1].plot(
            _times(minutes),
            [series[m].get("lists", 0) for m in minutes],
            marker="o",
            markersize=3,
            label=name,
        )
    axes[-1].set_ylabel("lists / minute" if step == 1 else f"lists / {step} minutes")
    axes[-1].xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    axes[0].legend(loc="best")
    axes[0].set_title(f"experiment {report.experiment.name}, by arm (event time, UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _times(minutes: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(m * 60, UTC) for m in minutes]
