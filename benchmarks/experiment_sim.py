"""Does the experiment report find a real difference, and only real ones?

Replays MovieLens-100K (from PyPI's recbole, read in place) as an A/B test with a simulated
user: all but each user's last ``--max-future`` events train two recommenders, and each of
those last events is preceded by a list of 10 from the user's arm's recommender; the user
"clicks" when the item they really chose next is in that list. Users are split by the experiment
assignment (:func:`streamrec.engine.serving.experiments.assign`), and
:func:`streamrec.engine.serving.experiment_stats.compare`
judges the arms on CTR (clicks per list), exactly as ``streamrec experiment report``
would.

* A/B: item-kNN against most-popular, a difference built in (kNN is the better model here).
* A/A: the same recommender in both arms, reassigned with ``--aa-seeds`` different keys;
  the share of A/A runs called significant must stay near alpha (5%).
* Small samples: A/A tests with 10 to 200 users per arm at low rates, where an arm often
  has no success at all, ``--small-runs`` times per cell: synthetic users (even: one rate
  for all; uneven: each user their own rate, beta-distributed, and their own number of
  lists) and small random samples of the MovieLens users (their first 2 lists). The share
  the verdict calls significant must stay at or under 5%; next to it the verdict's rule
  before Fisher's test and the minimum of evidence (the delta method alone, p < 0.05),
  and the power of the verdict when B's rate is twice A's (half as many runs).

    python benchmarks/experiment_sim.py
    python benchmarks/experiment_sim.py --aa-seeds 500 --users 943 --small-runs 2000

Writes ``benchmarks/results/experiment-sim-<stamp>.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine, write_report  # noqa: E402
from streamrec.engine.offline.baselines import ItemKNNRecommender  # noqa: E402
from streamrec.engine.offline.datasets import load_movielens_100k  # noqa: E402
from streamrec.engine.offline.evaluation import PopularityRecommender  # noqa: E402
from streamrec.engine.serving.experiment_stats import Comparison, compare  # noqa: E402
from streamrec.engine.serving.experiments import Experiment, Variant, assign  # noqa: E402

LIST = 10
#: Users per arm, and per-list rates, of the small-sample cells.
SMALL_USERS = (10, 20, 50, 200)
SMALL_RATES = (0.01, 0.05)
#: Lists per sampled MovieLens user in the small-sample cells.
ML_LISTS = 2

Arm = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def old_rule_p(c: Arm, t: Arm) -> float:
    """The verdict's p-value before small counts were handled: the delta method over
    users with a normal reference and no variance floor (0 for an arm without successes)."""

    def variance(x: npt.NDArray[np.int64], n: npt.NDArray[np.int64]) -> float:
        m, total = len(n), float(n.sum())
        if m < 2:
            return math.inf
        residual = x - x.sum() / total * n
        return float((residual**2).sum() / total**2 * m / (m - 1))

    se = math.sqrt(variance(*c) + variance(*t))
    diff = t[0].sum() / t[1].sum() - c[0].sum() / c[1].sum()
    return float(2 * stats.norm.sf(abs(diff) / se)) if 0 < se < math.inf else 1.0


def synthetic_arm(rng: np.random.Generator, users: int, rate: float, uneven: bool) -> Arm:
    """Even: 1 + Poisson(1) lists per user, one rate for all. Uneven: geometric lists
    (mean 8) and each user's own rate, beta(2 rate, 2 (1 - rate)): most never click."""
    if uneven:
        lists = rng.geometric(1 / 8, size=users)
        rates = rng.beta(2 * rate, 2 * (1 - rate), size=users)
    else:
        lists = 1 + rng.poisson(1.0, size=users)
        rates = np.full(users, rate)
    return rng.binomial(lists, rates).astype(np.int64), lists.astype(np.int64)


@dataclasses.dataclass
class Cell:
    """One small-sample cell: counts over its A/A runs and its A/B (power) runs."""

    name: str
    users: int
    rate: float
    runs: int = 0
    zero_arm: int = 0
    too_little: int = 0
    significant: int = 0
    old_rule: int = 0
    exact: int = 0
    power_runs: int = 0
    power: int = 0

    def add(self, c: Arm, t: Arm, r: Comparison) -> None:
        self.runs += 1
        self.zero_arm += r.counts[0] == 0 or r.counts[2] == 0
        self.too_little += not r.enough
        self.significant += r.significant
        self.old_rule += old_rule_p(c, t) < 0.05
        self.exact += r.p_exact < 0.05

    def row(self) -> str:
        def share(k: int, n: int) -> str:
            return f"{k / n:.1%}" if n else "n/a"

        high = stats.binomtest(self.significant, self.runs).proportion_ci(0.95).high
        return (
            f"| {self.name} | {self.users} | {self.rate:.3f} | {share(self.zero_arm, self.runs)} "
            f"| {share(self.too_little, self.runs)} | **{share(self.significant, self.runs)}** "
            f"(≤ {high:.1%}) | {share(self.old_rule, self.runs)} | "
            f"{share(self.exact, self.runs)} | {share(self.power, self.power_runs)} |"
        )


def small_samples(
    runs: int, ml_arms: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]
) -> list[Cell]:
    """A/A and A/B runs per cell; ``ml_arms`` are per-user (clicks, lists) of the MovieLens
    models over each user's first :data:`ML_LISTS` lists."""
    rng = np.random.default_rng(20261207)
    cells = []

    def judge(cell: Cell, c: Arm, t: Arm, seed: int, power: bool) -> None:
        r = compare("CTR", ("A", *c), ("B", *t), bootstrap=100, seed=seed)
        if power:
            cell.power_runs += 1
            cell.power += r.significant
        else:
            cell.add(c, t, r)

    for uneven in (False, True):
        for users in SMALL_USERS:
            for rate in SMALL_RATES:
                cell = Cell("uneven users" if uneven else "even users", users, rate)
                for n in range(runs):
                    a = synthetic_arm(rng, users, rate, uneven)
                    judge(cell, a, synthetic_arm(rng, users, rate, uneven), n, power=False)
                for n in range(runs // 2):
                    a = synthetic_arm(rng, users, rate, uneven)
                    judge(cell, a, synthetic_arm(rng, users, 2 * rate, uneven), n, power=True)
                cells.append(cell)
    knn, popular = ml_arms["item-knn"], ml_arms["popular"]
    for users in SMALL_USERS[:3]:
        for name, model in (("MovieLens item-kNN", knn), ("MovieLens popular", popular)):
            cell = Cell(name, users, float(model[0].sum() / model[1].sum()))
            for n in range(runs):
                pick = rng.choice(len(model[0]), size=2 * users, replace=False)
                a, b = pick[:users], pick[users:]
                judge(cell, (model[0][a], model[1][a]), (model[0][b], model[1][b]), n, False)
            cells.append(cell)
        # Power on real data: popular (A) against item-kNN (B), about twice its CTR.
        cell = cells[-1]
        for n in range(runs // 2):
            pick = rng.choice(len(knn[0]), size=2 * users, replace=False)
            a, b = pick[:users], pick[users:]
            judge(cell, (popular[0][a], popular[1][a]), (knn[0][b], knn[1][b]), n, True)
    return cells


def clicks_per_user(
    recommender: Any, histories: list[list[str]], types: list[list[str]], future: list[list[str]],
    item_ids: list[str], first: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:  # fmt: skip
    """Per user: (lists that held the next real item, lists shown), one list before each
    of the user's later events (the ``first`` ones only, when given), from their history
    so far."""
    if first is not None:
        future = [ahead[:first] for ahead in future]
    clicks = np.zeros(len(histories), dtype=np.int64)
    shown = np.zeros(len(histories), dtype=np.int64)
    column = {item: c for c, item in enumerate(item_ids)}
    for u, (past, kinds, ahead) in enumerate(zip(histories, types, future, strict=True)):
        steps_h = [past + ahead[:t] for t in range(len(ahead))]
        steps_t = [kinds + ["view"] * t for t in range(len(ahead))]
        scores = np.asarray(recommender(steps_h, steps_t), dtype=np.float64)
        for t, seen in enumerate(steps_h):
            scores[t, [column[i] for i in seen if i in column]] = -np.inf
        top = np.argpartition(-scores, LIST, axis=1)[:, :LIST]
        for t, nxt in enumerate(ahead):
            clicks[u] += column.get(nxt, -1) in set(top[t].tolist())
        shown[u] = len(ahead)
    return clicks, shown


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--aa-seeds", type=int, default=200, help="A/A reassignments")
    parser.add_argument("--users", type=int, default=943, help="users to replay (at most)")
    parser.add_argument("--max-future", type=int, default=10, help="replayed events per user")
    parser.add_argument(
        "--small-runs", type=int, default=1000, help="A/A runs per small-sample cell"
    )
    args = parser.parse_args()
    started = time.process_time()

    events = load_movielens_100k().events
    item_ids = sorted(set(events["item_id"].astype(str)))
    # Each user's last --max-future events are replayed; everything before trains.
    events = events.assign(user=events["user_id"].astype(str), item=events["item_id"].astype(str))
    position = events.groupby("user", sort=False).cumcount(ascending=False)
    later_mask = position < args.max_future
    train = events[~later_mask]
    knn = ItemKNNRecommender.fit(train, item_ids, k=50)
    popular = PopularityRecommender.fit(train, item_ids)
    by_user = {u: g for u, g in train.groupby("user", sort=False)}
    later = {u: g for u, g in events[later_mask].groupby("user", sort=False)}
    users = sorted(u for u in later if u in by_user)[: args.users]
    histories = [by_user[u]["item"].tolist()[-50:] for u in users]
    types = [by_user[u]["type"].astype(str).tolist()[-50:] for u in users]
    future = [later[u]["item"].tolist() for u in users]
    outcomes = {
        "item-knn": clicks_per_user(knn, histories, types, future, item_ids),
        "popular": clicks_per_user(popular, histories, types, future, item_ids),
    }
    first_lists = {
        "item-knn": clicks_per_user(knn, histories, types, future, item_ids, ML_LISTS),
        "popular": clicks_per_user(popular, histories, types, future, item_ids, ML_LISTS),
    }

    def split(key: bytes, a: str, b: str) -> tuple[Any, Any]:
        exp = Experiment("sim", (Variant("A", 0.5), Variant("B", 0.5)))
        arm = np.asarray([assign(exp, u, key) for u in users])
        pick = {"A": arm == "A", "B": arm == "B"}
        return (
            ("A", outcomes[a][0][pick["A"]], outcomes[a][1][pick["A"]]),
            ("B", outcomes[b][0][pick["B"]], outcomes[b][1][pick["B"]]),
        )

    ab = compare("CTR", *split(b"ab-key", "item-knn", "popular"))
    ba = compare("CTR", *split(b"ab-key", "popular", "item-knn"))
    false_positives = naive = boot = verdicts = 0
    for seed in range(args.aa_seeds):
        aa = compare("CTR", *split(f"aa-{seed}".encode(), "item-knn", "item-knn"), bootstrap=400)
        false_positives += aa.p_value < 0.05
        naive += aa.p_two_proportion < 0.05
        boot += aa.p_bootstrap < 0.05
        verdicts += aa.significant
    fp_rate = false_positives / args.aa_seeds
    lists = int(outcomes["item-knn"][1].sum())
    cells = small_samples(args.small_runs, first_lists)
    small_fp = sum(c.significant for c in cells) / sum(c.runs for c in cells)
    cpu_s = time.process_time() - started

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        f"# Experiment report on a simulated A/B test, {stamp}",
        "",
        f"Command: `python benchmarks/experiment_sim.py --aa-seeds {args.aa_seeds} "
        f"--users {args.users} --max-future {args.max_future} --small-runs "
        f"{args.small_runs}`  ",
        f"Machine: {machine()}; {cpu_s:.0f} s of CPU, one process",
        "",
        f"MovieLens-100K: each user's last {args.max_future} events are replayed, the rest "
        f"trains both models; {len(users)} users, {lists:,} lists of {LIST} per model (one "
        "before each replayed event, from the history so far); a click = the next real item "
        "is in the list. Users are split 50/50 by the experiment's keyed hash. p is over "
        "users (delta method); p boot. is the bootstrap over users; p two-prop. treats "
        "every list as an independent trial.",
        "",
        "| test | control CTR | treatment CTR | lift | 95% CI (bootstrap) | p | p boot. "
        "| p two-prop. | SRM p | verdict |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, r in (("A=item-kNN, B=popular", ab), ("A=popular, B=item-kNN", ba)):
        lines.append(
            f"| {name} | {r.rates[0]:.4f} | {r.rates[1]:.4f} | {r.lift:+.1%} | "
            f"{r.lift_ci[0]:+.1%} .. {r.lift_ci[1]:+.1%} | {r.p_value:.2g} | "
            f"{r.p_bootstrap:.2g} | {r.p_two_proportion:.2g} | {r.srm_p:.2f} | "
            f"{r.verdict} |"
        )
    lines += [
        "",
        f"A/A (item-kNN in both arms, {args.aa_seeds} assignment keys): the verdict said "
        f"significant in {verdicts} runs = {verdicts / args.aa_seeds:.1%} (at most 5%); p < "
        f"0.05 over users in {false_positives} = {fp_rate:.1%} (expected about 5%); by the "
        f"bootstrap p over users (400 resamples) in {boot} = {boot / args.aa_seeds:.1%}; the "
        f"two-proportion test over lists would have said so in {naive} = "
        f"{naive / args.aa_seeds:.1%}.",
        "",
        f"Small samples, A/A ({args.small_runs} runs per cell; power: {args.small_runs // 2} "
        "runs with B's rate twice A's, for MovieLens popular (A) against item-kNN (B)). "
        "*zero arm*: runs where an arm had no success; *too little data*: runs the verdict "
        "declined (fewer than 10 users per arm or 10 users who converted); *verdict*: runs "
        "called significant, with the upper end of its 95% interval; *old rule*: p < 0.05 by "
        "the delta method alone (the verdict before); *Fisher*: Fisher's exact test alone "
        "over lists.",
        "",
        "| users | per arm | rate | zero arm | too little data | verdict (A/A) | old rule "
        "| Fisher | power at 2x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(cell.row() for cell in cells),
        "",
        f"Over all small-sample A/A runs the verdict said significant in {small_fp:.2%}.",
    ]
    payload = {
        "stamp": stamp,
        "users": len(users),
        "lists_per_model": lists,
        "ab": dataclasses.asdict(ab),
        "ba": dataclasses.asdict(ba),
        "aa_seeds": args.aa_seeds,
        "aa_false_positive_rate": fp_rate,
        "aa_bootstrap_false_positive_rate": boot / args.aa_seeds,
        "aa_two_proportion_false_positive_rate": naive / args.aa_seeds,
        "aa_verdict_false_positive_rate": verdicts / args.aa_seeds,
        "small_runs": args.small_runs,
        "small": [dataclasses.asdict(cell) for cell in cells],
        "small_verdict_false_positive_rate": small_fp,
        "cpu_s": cpu_s,
    }
    write_report(ROOT / "benchmarks" / "results", f"experiment-sim-{stamp}", payload,
                 "\n".join(lines) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
