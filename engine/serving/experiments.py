"""A/B experiments: definitions and user assignment. Pure.

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
and feature weights, and the reason generator and language (:data:`OVERRIDABLE`). Any other
key, at any level, is refused with the closest valid one: a misspelt ``holdout`` or an
override outside ``overrides`` would otherwise run an experiment that tests nothing.

Assignment is a keyed hash of (experiment, user id): deterministic (every worker, every
restart agrees), sticky (a user stays in their arm), uniform over the shares, and
independent between experiments. Without the key nobody can predict or steer it.

The statistics that judge the arms are in :mod:`streamrec.engine.serving.experiment_stats`.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec.engine.serving.ranker import FEATURES, SOURCES

__all__ = [
    "EXPERIMENT_KEYS",
    "HOLDOUT",
    "OVERRIDABLE",
    "VARIANT_KEYS",
    "Experiment",
    "ExperimentConfigError",
    "Variant",
    "assign",
    "load_experiments",
]

#: The arm name of users held out of an experiment.
HOLDOUT = "holdout"
#: The keys an ``[[experiment]]`` table may have; anything else is refused.
EXPERIMENT_KEYS = ("name", "holdout", "variant")
#: The keys an ``[[experiment.variant]]`` table may have; anything else is refused.
VARIANT_KEYS = ("name", "share", "overrides")
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
                    close = difflib.get_close_matches(key, list(OVERRIDABLE), n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    msg = (
                        f"{where}, variant {v.name!r}: cannot override {key!r}; {hint}"
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

    Every key must be one the file format knows (:data:`EXPERIMENT_KEYS`,
    :data:`VARIANT_KEYS`, the overrides of :data:`OVERRIDABLE`): a misspelt or misplaced
    key would otherwise change nothing, silently.

    Raises:
        ExperimentConfigError: invalid TOML, a missing or unknown field, or an experiment
            that cannot run; the message says which, where, and the closest valid key.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source} is not valid TOML: {exc}"
        raise ExperimentConfigError(msg) from exc
    _known_keys(raw, ("experiment",), f"{source}, top level", "the file")
    bodies = raw.get("experiment", [])
    if not isinstance(bodies, list):
        msg = f"{source}: experiment must be an array of tables ([[experiment]]), got {bodies!r}"
        raise ExperimentConfigError(msg)
    out = []
    for n, body in enumerate(bodies):
        try:
            where = f"{source}, experiment {body.get('name', f'#{n + 1}')!r}"
            _known_keys(body, EXPERIMENT_KEYS, where, "an experiment")
            for m, v in enumerate(body["variant"]):
                label = v.get("name", f"#{m + 1}")
                _known_keys(v, VARIANT_KEYS, f"{where}, variant {label!r}", "a variant")
            variants = tuple(
                Variant(str(v["name"]), float(v["share"]), dict(v.get("overrides", {})))
                for v in body["variant"]
            )
            out.append(Experiment(str(body["name"]), variants, float(body.get("holdout", 0.0))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ExperimentConfigError):
                raise
            msg = f"{source}: experiment #{n + 1} is missing or has a bad field: {exc!r}"
            raise ExperimentConfigError(msg) from exc
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        msg = f"{source}: experiment names must be unique, got {names}"
        raise ExperimentConfigError(msg)
    return out


def _known_keys(table: Mapping[str, Any], valid: Sequence[str], where: str, what: str) -> None:
    """Refuse the first key of ``table`` not in ``valid``, naming the closest valid one (or
    where it belongs when it is valid one level down)."""
    for key in table:
        if key in valid:
            continue
        if key in OVERRIDABLE:
            whose = "" if what == "a variant" else "a variant's "
            hint = f"it is an override: put it under {whose}overrides = {{ {key} = ... }}"
        elif what == "the file" and key in EXPERIMENT_KEYS:
            hint = f"it belongs to an experiment ([[experiment]] {key} = ...)"
        elif what != "a variant" and key in VARIANT_KEYS:
            hint = f"it belongs to a variant ([[experiment.variant]] {key} = ...)"
        else:
            # Misspelt overrides are as likely as misspelt keys.
            candidates = [*valid, *OVERRIDABLE] if what == "a variant" else list(valid)
            close = difflib.get_close_matches(key, candidates, n=1)
            if not close:
                hint = f"{what} takes {', '.join(valid)}"
            elif close[0] in OVERRIDABLE:
                hint = f"did you mean the override {close[0]!r}, in overrides = {{ ... }}?"
            else:
                hint = f"did you mean {close[0]!r}?"
        msg = f"{where}: unknown key {key!r}; {hint}"
        raise ExperimentConfigError(msg)


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
