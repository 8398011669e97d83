"""The worker reads its experiment from ``STREAMREC_EXPERIMENTS_FILE``: a file that would
run something other than what it says is refused with the file, the place and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.engine.serving.experiments import ExperimentConfigError
from streamrec.stream.settings import Settings
from streamrec.stream.worker.experiment_config import arms_of, load_running_experiment

# Tried from outside: it started, ran and hot-reloaded without a word, and both arms
# served identical 10-item lists with no holdout.
PROBE = """
[[experiment]]
name = "probe4"
holdot = 0.1                 # typo for holdout
[[experiment.variant]]
name = "A"
share = 0.5
[[experiment.variant]]
name = "B"
share = 0.5
num_recommendations = 4      # an override in the wrong place
"""


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return Settings(experiments_file=path, experiment_key=SecretStr("key"))


def test_the_probe_file_is_refused_naming_the_file_the_key_and_the_closest_valid_one(
    tmp_path: Path,
):
    settings = _settings(tmp_path, PROBE)
    with pytest.raises(ExperimentConfigError) as refused:
        load_running_experiment(settings)
    assert str(refused.value) == (
        f"{settings.experiments_file}, experiment 'probe4': unknown key 'holdot'; "
        "did you mean 'holdout'?"
    )


def test_the_override_in_the_wrong_place_is_refused_once_the_typo_is_fixed(tmp_path: Path):
    settings = _settings(tmp_path, PROBE.replace("holdot", "holdout"))
    complaint = r"variant 'B': unknown key 'num_recommendations'; it is an override: put it under"
    with pytest.raises(ExperimentConfigError, match=complaint + r" overrides = \{"):
        load_running_experiment(settings)


def test_the_corrected_probe_file_runs_what_it_says(tmp_path: Path):
    fixed = PROBE.replace("holdot", "holdout").replace(
        "num_recommendations = 4", "overrides = { num_recommendations = 4 }"
    )
    settings = _settings(tmp_path, fixed)
    experiment = load_running_experiment(settings)
    assert experiment is not None
    assert experiment.holdout == 0.1
    arms = arms_of(experiment, settings)
    assert arms["B"].params.k == 4
    assert arms["A"].params.k == arms["holdout"].params.k == settings.num_recommendations
