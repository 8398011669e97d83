"""A/B statistics: one arm against the control on one conversion metric. Pure.

:func:`compare` judges arms over *users*, the unit of randomisation (one user's lists are
not independent trials), and with an exact test over trials, which stays valid at small
and zero counts:

=====================  ===============================================================
p_value                Welch's t-test over users; each arm's variance by the delta
                       method for a ratio of sums, floored at the binomial variance of
                       its rate with 0.5 added to the successes (an arm with no success
                       has a delta-method variance of 0)
p_exact                Fisher's exact test over trials (the exact test of two Poisson
                       rates where an arm has more successes than trials)
lift_ci                the bootstrap over users, widened where needed to the Katz
                       interval of the log rate ratio with 0.5 added to every count
p_bootstrap,           for reference: the bootstrap over users (it collapses, like the
p_two_proportion       delta method, on an arm with no success) and the textbook z-test
                       over trials (too optimistic when users differ)
srm_p                  sample ratio mismatch of the users per arm against the shares
=====================  ===============================================================

"Significant" needs both ``p_value`` and ``p_exact`` below alpha, no sample ratio mismatch,
and a minimum of evidence (:data:`MIN_USERS_PER_ARM`, :data:`MIN_CONVERTERS`); below that
minimum the plain-language verdict says there is too little data to decide.
``benchmarks/experiment_sim.py`` checks the verdict's false-positive rate on A/A tests,
small and zero counts included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

__all__ = [
    "MIN_CONVERTERS",
    "MIN_USERS_PER_ARM",
    "SRM_ALPHA",
    "Comparison",
    "compare",
    "sample_ratio_p",
]

#: Below this sample-ratio-mismatch p-value the arms' sizes are not what their shares say.
SRM_ALPHA = 0.001


def sample_ratio_p(counts: Sequence[int], shares: Sequence[float]) -> float:
    """Chi-square p-value of the arms' user counts against their intended shares; a tiny
    value (< 0.001) means the assignment or the logging is broken (sample ratio mismatch)."""
    total = sum(counts)
    if total == 0:
        return 1.0
    expected = [total * s / sum(shares) for s in shares]
    return float(scipy_stats.chisquare(counts, expected).pvalue)


#: The least evidence for any verdict: users in each arm, and users with a success (a
#: click, a purchase) in both arms together; below it the verdict says there is too
#: little data to decide. Counting users, not successes: one user who clicks twenty
#: times is one piece of evidence, and the tests' approximations need many.
MIN_USERS_PER_ARM = 10
MIN_CONVERTERS = 10


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one conversion metric.

    Attributes:
        control, treatment: Arm names.
        metric: What is compared, e.g. "CTR".
        counts: (control successes, control trials, treatment successes, treatment trials).
        users: (control users, treatment users).
        rates: (control rate, treatment rate) of successes per trial.
        diff: treatment - control rate; ``diff_ci``: its 95% half-width (over users).
        lift: diff / control rate (NaN while the control has no success); ``lift_ci``: its
            95% interval, the bootstrap over users widened where needed to the Katz interval
            of the log rate ratio over trials with 0.5 added to every count, which keeps a
            width when an arm has no success (where every resample gives the same lift).
        p_value: two-sided, over users, the unit of randomisation (one user's lists are not
            independent trials): Welch's t-test of the difference, each arm's variance by
            the delta method for a ratio of sums, floored at the binomial variance of its
            rate with 0.5 added to the successes (an arm without a success, or whose users
            all convert alike, has a delta-method variance of 0).
        p_exact: two-sided Fisher's exact test over trials (where an arm has more successes
            than trials, the exact conditional test of two Poisson rates); valid at any
            count, zero included.
        p_two_proportion: the textbook two-proportion z-test over trials, for reference;
            it is too optimistic when users differ and see many lists.
        p_bootstrap: two-sided bootstrap p-value over users (how often the resampled
            difference falls on the other side of 0, doubled; 0 means below 1/rounds), for
            reference: it collapses, like the delta method, when an arm has no success.
        srm_p: sample-ratio-mismatch p-value of the users per arm.
        enough: at least :data:`MIN_USERS_PER_ARM` users in each arm and
            :data:`MIN_CONVERTERS` users with a success in both together.
        significant: the verdict's call: enough evidence, both ``p_value`` and ``p_exact``
            below alpha, and no sample ratio mismatch.
        users_needed: users per arm for 80% power at the observed difference (None when
            the difference is significant or zero, or there is too little data to size it).
        verdict: a sentence for people.
    """

    control: str
    treatment: str
    metric: str
    counts: tuple[int, int, int, int]
    users: tuple[int, int]
    rates: tuple[float, float]
    diff: float
    diff_ci: float
    lift: float
    lift_ci: tuple[float, float]
    p_value: float
    p_exact: float
    p_two_proportion: float
    p_bootstrap: float
    srm_p: float
    enough: bool
    significant: bool
    users_needed: int | None
    verdict: str


def compare(
    metric: str,
    control: tuple[str, npt.NDArray[np.integer], npt.NDArray[np.integer]],
    treatment: tuple[str, npt.NDArray[np.integer], npt.NDArray[np.integer]],
    shares: tuple[float, float] = (0.5, 0.5),
    *,
    alpha: float = 0.05,
    bootstrap: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two arms on ``metric`` (e.g. "CTR": clicks per list served).

    Significant needs enough evidence (:data:`MIN_USERS_PER_ARM`,
    :data:`MIN_CONVERTERS`) and both the test over users and the exact test below
    ``alpha``: the first is right when users differ, the second when counts are small.

    Args:
        control, treatment: (arm name, per-user successes, per-user trials), (m,) each.
        shares: The arms' intended traffic shares (for the SRM check).
        alpha: Significance level of the verdict.
        bootstrap: Resamples of users for the lift's interval.
        seed: Seeds the bootstrap.

    Example:
        >>> a = (np.array([1, 0, 2]), np.array([5, 4, 6]))
        >>> compare("CTR", ("A", *a), ("B", *a)).verdict.startswith("Not enough data yet")
        True
    """
    (c_name, c_x, c_n), (t_name, t_x, t_n) = control, treatment
    x1, n1, x2, n2 = int(c_x.sum()), int(c_n.sum()), int(t_x.sum()), int(t_n.sum())
    m1, m2 = len(c_n), len(t_n)
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    diff = p2 - p1
    pooled = (x1 + x2) / (n1 + n2) if n1 + n2 else 0.0
    spread = pooled * (1 - pooled) if pooled <= 1 else pooled  # Poisson above 1 per trial
    se0 = math.sqrt(spread * (1 / n1 + 1 / n2)) if n1 and n2 else 0.0
    p_pooled = float(2 * scipy_stats.norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    v1, v2 = _ratio_variance(c_x, c_n), _ratio_variance(t_x, t_n)
    se = math.sqrt(v1 + v2)
    if 0 < se < math.inf:
        df = (v1 + v2) ** 2 / (v1**2 / (m1 - 1) + v2**2 / (m2 - 1))  # Welch-Satterthwaite
        p_value = float(2 * scipy_stats.t.sf(abs(diff) / se, df))
        diff_ci = float(scipy_stats.t.ppf(1 - alpha / 2, df)) * se
    else:
        p_value, diff_ci = 1.0, math.inf
    p_exact = _exact_p(x1, n1, x2, n2)
    lift = diff / p1 if p1 > 0 else math.nan
    boot_ci, p_boot = _bootstrap(c_x, c_n, t_x, t_n, bootstrap, seed)
    katz = _katz_interval(x1, n1, x2, n2, float(scipy_stats.norm.ppf(1 - alpha / 2)))
    lift_ci = (float(np.fmin(boot_ci[0], katz[0])), float(np.fmax(boot_ci[1], katz[1])))
    srm_p = sample_ratio_p([m1, m2], shares)
    converters = int(np.count_nonzero(c_x)) + int(np.count_nonzero(t_x))
    enough = min(m1, m2) >= MIN_USERS_PER_ARM and converters >= MIN_CONVERTERS
    significant = enough and p_value < alpha and p_exact < alpha and srm_p >= SRM_ALPHA
    needed = None
    if enough and not significant and diff != 0 and p1 > 0:
        per_user = v1 * m1 + v2 * m2  # variance of one user's contribution
        needed = _users_needed(diff, per_user, alpha)
    counts = (x1, n1, x2, n2)
    verdict = _verdict(
        metric, c_name, t_name, counts, m1 + m2, lift, lift_ci, (enough, significant), srm_p,
        needed,
    )  # fmt: skip
    return Comparison(
        c_name, t_name, metric, counts, (m1, m2), (p1, p2), diff, diff_ci, lift, lift_ci,
        p_value, p_exact, p_pooled, p_boot, srm_p, enough, significant, needed, verdict,
    )  # fmt: skip


def _ratio_variance(x: npt.NDArray[np.integer], n: npt.NDArray[np.integer]) -> float:
    """Variance of sum(x) / sum(n) over independent users (delta method), at least the
    binomial (or, above one success per trial, Poisson) variance of the rate with 0.5
    added to the successes and 1 to the trials; infinite below two users."""
    m = len(n)
    total = float(n.sum())
    if m < 2 or total == 0:
        return math.inf
    successes = float(x.sum())
    r = successes / total
    residual = x.astype(np.float64) - r * n.astype(np.float64)
    delta = float((residual**2).sum() / total**2 * m / (m - 1))
    shrunk = (successes + 0.5) / (total + 1)
    floor = shrunk * (1 - shrunk if successes <= total else 1.0) / total
    return max(delta, floor)


def _exact_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided exact p-value of equal rates: Fisher's test over trials, or the
    conditional binomial test of two Poisson rates where successes exceed trials."""
    if not n1 or not n2 or not x1 + x2:
        return 1.0
    if x1 <= n1 and x2 <= n2:
        return float(scipy_stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue)
    return float(scipy_stats.binomtest(x2, x1 + x2, n2 / (n1 + n2)).pvalue)


def _katz_interval(x1: int, n1: int, x2: int, n2: int, z: float) -> tuple[float, float]:
    """The lift's interval from the log of the rate ratio over trials (Katz), with 0.5
    added to every count: finite, and of non-zero width when an arm has no success."""
    if not n1 or not n2:
        return (math.nan, math.nan)

    def log_rate_and_variance(x: int, n: int) -> tuple[float, float]:
        a, trials = x + 0.5, n + 1.0
        return math.log(a / trials), 1 / a - (1 / trials if x <= n else 0.0)

    (l1, s1), (l2, s2) = log_rate_and_variance(x1, n1), log_rate_and_variance(x2, n2)
    half = z * math.sqrt(s1 + s2)
    return (math.exp(l2 - l1 - half) - 1, math.exp(l2 - l1 + half) - 1)


def _bootstrap(
    c_x: npt.NDArray[np.integer],
    c_n: npt.NDArray[np.integer],
    t_x: npt.NDArray[np.integer],
    t_n: npt.NDArray[np.integer],
    rounds: int,
    seed: int,
) -> tuple[tuple[float, float], float]:
    """Resampling users of each arm: the lift's 95% interval and the difference's
    two-sided p-value."""
    if not len(c_n) or not len(t_n):
        return (math.nan, math.nan), 1.0
    rng = np.random.default_rng(seed)
    ci = rng.integers(0, len(c_n), size=(rounds, len(c_n)))
    ti = rng.integers(0, len(t_n), size=(rounds, len(t_n)))
    with np.errstate(divide="ignore", invalid="ignore"):
        p1 = c_x[ci].sum(axis=1) / c_n[ci].sum(axis=1)
        p2 = t_x[ti].sum(axis=1) / t_n[ti].sum(axis=1)
        diffs = p2 - p1
        lifts = diffs / p1
    diffs = diffs[np.isfinite(diffs)]
    p_value = (
        min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
        if len(diffs)
        else 1.0
    )
    lifts = lifts[np.isfinite(lifts)]
    if not len(lifts):
        return (math.nan, math.nan), p_value
    low, high = np.quantile(lifts, [0.025, 0.975])
    return (float(low), float(high)), p_value


def _users_needed(diff: float, per_user_variance: float, alpha: float) -> int:
    """Users per arm for 80% power to detect ``diff`` (normal approximation)."""
    z_a = scipy_stats.norm.ppf(1 - alpha / 2)
    z_b = scipy_stats.norm.ppf(0.8)
    return int(math.ceil(float((z_a + z_b) ** 2 * per_user_variance / diff**2)))


def _verdict(
    metric: str,
    control: str,
    treatment: str,
    counts: tuple[int, int, int, int],
    users: int,
    lift: float,
    lift_ci: tuple[float, float],
    calls: tuple[bool, bool],
    srm_p: float,
    needed: int | None,
) -> str:
    enough, significant = calls
    if srm_p < SRM_ALPHA:
        return (
            f"Sample ratio mismatch (p = {srm_p:.1g}): the arms' sizes do not match their "
            "shares, so the comparison cannot be trusted; check the assignment and logging."
        )
    x1, n1, x2, n2 = counts
    ci = f"95% CI {lift_ci[0]:+.1%} .. {lift_ci[1]:+.1%}"
    if not enough:
        so_far = f"lift {lift:+.1%}, {ci}" if math.isfinite(lift) else f"none in {control}"
        return (
            f"Not enough data yet to decide on {metric}: {control} {x1:,}/{n1:,}, {treatment} "
            f"{x2:,}/{n2:,} from {users:,} users ({so_far}); a verdict needs at least "
            f"{MIN_USERS_PER_ARM} users per arm and {MIN_CONVERTERS} users who converted "
            "in all."
        )
    if not math.isfinite(lift):
        if significant:
            return f"{treatment} raises {metric} against {control}, which had none, significant."
        return f"Not enough data yet: no {metric} observed in {control}."
    direction = "raises" if lift > 0 else "lowers"
    if significant:
        return (
            f"{treatment} {direction} {metric} by {abs(lift):.1%} against {control} ({ci}), "
            "significant."
        )
    if needed is None:
        return f"No difference in {metric} between {treatment} and {control}."
    more = 2 * needed - users
    return (
        f"Not enough data yet: {treatment} vs {control} on {metric} is {lift:+.1%} ({ci}), "
        "not significant; "
        + (f"about {more:,} more users needed." if more > 0 else "let it run longer.")
    )
