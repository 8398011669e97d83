"""A/B experiments: definitions, user assignment and the statistics that judge them. Pure.

An experiment file (TOML) names experiments, their variants with traffic shares, an
optional holdout, and what each variant changes::

    [[experiment]]
    name = "diversity-2026-11"
    holdout = 0.05                 # 5% of users get the default, and are not counted
    [[experiment.variant]]
    name = "A"
    share = 0.5
    [[experiment.variant]]
    name = "B"
    share = 0.5
    overrides = { diversity_weight = 0.3 }

Variants may change the ranking knobs, the model, the learned ranker's candidate sources
and feature weights, and the reason generator and language (:data:`OVERRIDABLE`).

Assignment is a keyed hash of (experiment, user id): deterministic (every worker, every
restart agrees), sticky (a user stays in their arm), uniform over the shares, and
independent between experiments. Without the key nobody can predict or steer it.

The statistics (:func:`compare`) judge arms over *users*, the unit of randomisation (a
delta-method test of the ratio of sums, and a bootstrap over users for the relative
lift), report the textbook two-proportion z-test over trials next to it, check the arms'
sizes against their shares (sample ratio mismatch), and end in a plain-language verdict.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from streamrec.engine.serving.ranker import FEATURES, SOURCES

__all__ = [
    "HOLDOUT",
    "OVERRIDABLE",
    "Comparison",
    "Experiment",
    "ExperimentConfigError",
    "Variant",
    "assign",
    "compare",
    "load_experiments",
    "sample_ratio_p",
]

#: The arm name of users held out of an experiment.
HOLDOUT = "holdout"
#: What a variant may change, and what each override must be.
OVERRIDABLE: Mapping[str, str] = {
    "diversity_weight": "a number in [0, 1]",
    "num_recommendations": "an integer >= 1",
    "candidate_fan_out": "an integer >= 0",
    "max_impressions": "an integer >= 0",
    "reason_language": '"en" or "zh"',
    "reason_generator": '"template" or "lm"',
    "model_dir": "a trained model directory (with its index/), relative to the file",
    "candidate_sources": f"a non-empty list of {', '.join(SOURCES)}",
    "ranking_weights": "a table of ranker feature -> weight",
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


_VALID: Mapping[str, Any] = {
    "diversity_weight": lambda v: _number(v) and 0 <= v <= 1,
    "num_recommendations": lambda v: _integer(v, 1),
    "candidate_fan_out": lambda v: _integer(v, 0),
    "max_impressions": lambda v: _integer(v, 0),
    "reason_language": lambda v: v in ("en", "zh"),
    "reason_generator": lambda v: v in ("template", "lm"),
    "model_dir": lambda v: isinstance(v, str) and bool(v.strip()),
    "candidate_sources": lambda v: (
        isinstance(v, list) and bool(v) and len(set(v)) == len(v) and all(s in SOURCES for s in v)
    ),
    "ranking_weights": lambda v: (
        isinstance(v, Mapping)
        and bool(v)
        and all(k in FEATURES and _number(w) and math.isfinite(w) for k, w in v.items())
    ),
}


class ExperimentConfigError(ValueError):
    """An experiment file that cannot be run; the message names the experiment and field."""


@dataclass(frozen=True)
class Variant:
    """One arm: its name, its share of the (non-holdout) traffic and what it changes."""

    name: str
    share: float
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """An experiment: its variants (shares summing to 1) and the held-out share of users."""

    name: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0

    def __post_init__(self) -> None:
        where = f"experiment {self.name!r}"
        if not self.name.strip():
            msg = "every experiment needs a non-empty name"
            raise ExperimentConfigError(msg)
        if len(self.variants) < 2:
            msg = f"{where}: needs at least two variants, got {len(self.variants)}"
            raise ExperimentConfigError(msg)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or HOLDOUT in names or not all(n.strip() for n in names):
            msg = f"{where}: variant names must be unique, non-empty and not {HOLDOUT!r}: {names}"
            raise ExperimentConfigError(msg)
        shares = [v.share for v in self.variants]
        if any(not (0 < s <= 1) for s in shares) or not math.isclose(
            sum(shares), 1.0, abs_tol=1e-9
        ):
            msg = f"{where}: variant shares must be in (0, 1] and sum to 1, got {shares}"
            raise ExperimentConfigError(msg)
        if not (0 <= self.holdout < 1):
            msg = f"{where}: holdout must be in [0, 1), got {self.holdout}"
            raise ExperimentConfigError(msg)
        for v in self.variants:
            for key, value in v.overrides.items():
                if key not in OVERRIDABLE:
                    msg = (
                        f"{where}, variant {v.name!r}: cannot override {key!r}; "
                        f"one of {', '.join(sorted(OVERRIDABLE))}"
                    )
                    raise ExperimentConfigError(msg)
                if not _VALID[key](value):
                    msg = (
                        f"{where}, variant {v.name!r}: {key} must be {OVERRIDABLE[key]}, "
                        f"got {value!r}"
                    )
                    raise ExperimentConfigError(msg)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


def load_experiments(text: str, source: str = "experiments file") -> list[Experiment]:
    """Parse and validate a TOML experiments file.

    Raises:
        ExperimentConfigError: invalid TOML, a missing field, or an experiment that cannot
            run; the message says which.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source} is not valid TOML: {exc}"
        raise ExperimentConfigError(msg) from exc
    out = []
    for n, body in enumerate(raw.get("experiment", [])):
        try:
            variants = tuple(
                Variant(str(v["name"]), float(v["share"]), dict(v.get("overrides", {})))
                for v in body["variant"]
            )
            out.append(Experiment(str(body["name"]), variants, float(body.get("holdout", 0.0))))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ExperimentConfigError):
                raise
            msg = f"{source}: experiment #{n + 1} is missing or has a bad field: {exc!r}"
            raise ExperimentConfigError(msg) from exc
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        msg = f"{source}: experiment names must be unique, got {names}"
        raise ExperimentConfigError(msg)
    return out


def _unit(key: bytes, experiment: str, user_id: str) -> float:
    """A uniform number in [0, 1) from HMAC-SHA256(key, experiment, user id)."""
    message = f"{experiment}\x1f{user_id}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(experiment: Experiment, user_id: str, key: bytes) -> str:
    """The user's arm: a variant name, or :data:`HOLDOUT`. Deterministic and sticky."""
    u = _unit(key, experiment.name, user_id)
    if u < experiment.holdout:
        return HOLDOUT
    u = (u - experiment.holdout) / (1.0 - experiment.holdout)
    edge = 0.0
    for v in experiment.variants:
        edge += v.share
        if u < edge:
            return v.name
    return experiment.variants[-1].name  # rounding at the top edge


def sample_ratio_p(counts: Sequence[int], shares: Sequence[float]) -> float:
    """Chi-square p-value of the arms' user counts against their intended shares; a tiny
    value (< 0.001) means the assignment or the logging is broken (sample ratio mismatch)."""
    total = sum(counts)
    if total == 0:
        return 1.0
    expected = [total * s / sum(shares) for s in shares]
    return float(scipy_stats.chisquare(counts, expected).pvalue)


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one conversion metric.

    Attributes:
        control, treatment: Arm names.
        rates: (control rate, treatment rate) of successes per trial.
        diff: treatment - control rate; ``diff_ci``: its 95% half-width (over users).
        lift: diff / control rate; ``lift_ci``: 95% bootstrap interval over users.
        p_value: two-sided, over users (delta method for a ratio of sums): users are the
            unit of randomisation, and one user's lists are not independent trials. The
            verdict uses this one.
        p_two_proportion: the textbook two-proportion z-test over trials, for reference;
            it is too optimistic when users differ and see many lists.
        p_bootstrap: two-sided bootstrap p-value over users (how often the resampled
            difference falls on the other side of 0, doubled; 0 means below 1/rounds).
        srm_p: sample-ratio-mismatch p-value of the users per arm.
        users_needed: users per arm for 80% power at the observed difference (None when
            the difference is significant or zero).
        verdict: a sentence for people.
    """

    control: str
    treatment: str
    metric: str
    rates: tuple[float, float]
    diff: float
    diff_ci: float
    lift: float
    lift_ci: tuple[float, float]
    p_value: float
    p_two_proportion: float
    p_bootstrap: float
    srm_p: float
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

    Args:
        control, treatment: (arm name, per-user successes, per-user trials).
        shares: The arms' intended traffic shares (for the SRM check).
        alpha: Significance level of the verdict.
        bootstrap: Resamples of users for the lift's interval.
        seed: Seeds the bootstrap.
    """
    (c_name, c_x, c_n), (t_name, t_x, t_n) = control, treatment
    x1, n1, x2, n2 = int(c_x.sum()), int(c_n.sum()), int(t_x.sum()), int(t_n.sum())
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    diff = p2 - p1
    pooled = (x1 + x2) / (n1 + n2) if n1 + n2 else 0.0
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) if n1 and n2 else 0.0
    p_pooled = float(2 * scipy_stats.norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    v1, v2 = _ratio_variance(c_x, c_n), _ratio_variance(t_x, t_n)
    se = math.sqrt(v1 + v2)
    p_value = float(2 * scipy_stats.norm.sf(abs(diff) / se)) if se > 0 else 1.0
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    lift = diff / p1 if p1 > 0 else math.nan
    lift_ci, p_boot = _bootstrap(c_x, c_n, t_x, t_n, bootstrap, seed)
    srm_p = sample_ratio_p([len(c_n), len(t_n)], shares)
    significant = p_value < alpha
    needed = None
    if not significant and diff != 0 and p1 > 0:
        per_user = v1 * len(c_n) + v2 * len(t_n)  # variance of one user's contribution
        needed = _users_needed(diff, per_user, alpha)
    verdict = _verdict(
        metric, c_name, t_name, lift, lift_ci, significant, srm_p, needed, len(c_n) + len(t_n)
    )
    return Comparison(
        c_name, t_name, metric, (p1, p2), diff, z * se, lift, lift_ci, p_value, p_pooled, p_boot,
        srm_p, needed, verdict,
    )  # fmt: skip


def _ratio_variance(x: npt.NDArray[np.integer], n: npt.NDArray[np.integer]) -> float:
    """Variance of sum(x) / sum(n) over independent users (delta method)."""
    m = len(n)
    total = float(n.sum())
    if m < 2 or total == 0:
        return math.inf if m < 2 else 0.0
    r = float(x.sum()) / total
    residual = x.astype(np.float64) - r * n.astype(np.float64)
    return float((residual**2).sum() / total**2 * m / (m - 1))


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
    lift: float,
    lift_ci: tuple[float, float],
    significant: bool,
    srm_p: float,
    needed: int | None,
    users: int,
) -> str:
    if srm_p < 0.001:
        return (
            f"Sample ratio mismatch (p = {srm_p:.1g}): the arms' sizes do not match their "
            "shares, so the comparison cannot be trusted; check the assignment and logging."
        )
    if not math.isfinite(lift):
        return f"Not enough data yet: no {metric} observed in {control}."
    half = (lift_ci[1] - lift_ci[0]) / 2 if all(map(math.isfinite, lift_ci)) else math.nan
    direction = "raises" if lift > 0 else "lowers"
    if significant:
        return (
            f"{treatment} {direction} {metric} by {abs(lift):.1%} ± {half:.1%} against "
            f"{control}, significant."
        )
    if needed is None:
        return f"No difference in {metric} between {treatment} and {control}."
    more = max(0, 2 * needed - users)
    return (
        f"Not enough data yet: {treatment} vs {control} on {metric} is {lift:+.1%} "
        f"(± {half:.1%}), not significant; about {more:,} more users needed."
    )
