"""The worker's side of experiments: the running experiment from
``STREAMREC_EXPERIMENTS_FILE`` and what each of its arms serves with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.engine.serving.experiments import (
    HOLDOUT,
    Experiment,
    ExperimentConfigError,
    load_experiments,
)
from streamrec.engine.serving.recommender import RankingParams
from streamrec.stream.settings import Settings
from streamrec.stream.worker.params import ranking_params

__all__ = ["Arm", "arms_of", "file_stamp", "load_running_experiment", "variant_params"]

#: Variant override name -> RankingParams field (the others: model_dir, reason_generator).
_FIELDS = {
    "diversity_weight": "diversity_weight",
    "num_recommendations": "k",
    "candidate_fan_out": "fan_out",
    "max_impressions": "max_impressions",
    "reason_language": "reason_language",
    "candidate_sources": "sources",
    "ranking_weights": "ranker_weights",
}


@dataclass(frozen=True)
class Arm:
    """What one arm serves with: its ranking knobs, its model directory (None: the
    worker's model) and its reason generator ("template" or "lm")."""

    name: str
    params: RankingParams
    model_dir: Path | None
    reason_generator: str


def load_running_experiment(settings: Settings) -> Experiment | None:
    """The experiment in ``STREAMREC_EXPERIMENTS_FILE`` (None without a file, or for a
    file that defines none: that is how a finished experiment is stopped).

    Raises:
        ExperimentConfigError: unreadable file, one that
            :func:`~streamrec.engine.serving.experiments.load_experiments` refuses (an
            unknown key at any level included: named, with the closest valid one), or more
            than one experiment in it (one runs at a time, so every list belongs to one
            arm). At start this stops the worker; on a hot edit the running experiment
            stays.
    """
    path = settings.experiments_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read STREAMREC_EXPERIMENTS_FILE={path}: {exc}"
        raise ExperimentConfigError(msg) from exc
    found = load_experiments(text, str(path))
    if len(found) > 1:
        msg = f"{path}: one experiment runs at a time, found {len(found)}"
        raise ExperimentConfigError(msg)
    return found[0] if found else None


def file_stamp(path: Path | None) -> tuple[int, int] | None:
    """(mtime in ns, size) of the experiments file, None when there is none to read."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def variant_params(params: RankingParams, overrides: Mapping[str, Any]) -> RankingParams:
    """``params`` with a variant's ranking overrides applied."""
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        field = _FIELDS.get(key)
        if field == "sources":
            changes[field] = tuple(value)
        elif field == "ranker_weights":
            changes[field] = tuple(sorted((str(k), float(v)) for k, v in value.items()))
        elif field is not None:
            changes[field] = value
    return dataclasses.replace(params, **changes)


def arms_of(experiment: Experiment | None, settings: Settings) -> dict[str, Arm]:
    """Every arm of ``experiment`` (the holdout included, with the defaults) and what it
    serves with. A relative ``model_dir`` is relative to the experiments file."""
    if experiment is None:
        return {}
    defaults = ranking_params(settings)
    holdout = Arm(HOLDOUT, defaults, None, settings.reason_generator)
    base = settings.experiments_file.parent if settings.experiments_file else Path()
    arms = {HOLDOUT: holdout}
    for variant in experiment.variants:
        model_dir = variant.overrides.get("model_dir")
        arms[variant.name] = Arm(
            variant.name,
            variant_params(defaults, variant.overrides),
            None if model_dir is None else (base / model_dir).resolve(),
            str(variant.overrides.get("reason_generator", settings.reason_generator)),
        )
    return arms
