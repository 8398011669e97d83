"""The worker's side of experiments: the running experiment from
``STREAMREC_EXPERIMENTS_FILE``, and a variant's ranking settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.experiments import Experiment, ExperimentConfigError, load_experiments
from engine.recommender import RankingParams
from stream.settings import Settings

__all__ = ["load_running_experiment", "variant_params"]

#: Variant override name -> RankingParams field.
_FIELDS = {
    "diversity_weight": "diversity_weight",
    "num_recommendations": "k",
    "candidate_fan_out": "fan_out",
    "max_impressions": "max_impressions",
    "reason_language": "reason_language",
}


def load_running_experiment(settings: Settings) -> Experiment | None:
    """The experiment in ``STREAMREC_EXPERIMENTS_FILE`` (None without a file).

    Raises:
        ExperimentConfigError: unreadable file, or not exactly one experiment in it (one
            runs at a time, so every list belongs to one arm).
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
    if len(found) != 1:
        msg = f"{path}: one experiment runs at a time, found {len(found)}"
        raise ExperimentConfigError(msg)
    return found[0]


def variant_params(params: RankingParams, overrides: Mapping[str, Any]) -> RankingParams:
    """``params`` with a variant's overrides applied."""
    return dataclasses.replace(params, **{_FIELDS[k]: v for k, v in overrides.items()})
