"""A misspelt STREAMREC_* variable is not silently ignored: a warning names it and the
closest setting, once, and never its value (it may be a secret)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.stream import settings as settings_module
from streamrec.stream.settings import Settings, unknown_variables, warn_unknown_variables

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def nothing_reported_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "_reported", set())


def test_a_misspelt_setting_is_unknown_and_the_closest_name_is_suggested():
    found = unknown_variables({"STREAMREC_BATCHSIZE": "10", "STREAMREC_REDIS_ULR": "x"})
    assert found == {
        "STREAMREC_BATCHSIZE": "STREAMREC_BATCH_SIZE",
        "STREAMREC_REDIS_ULR": "STREAMREC_REDIS_URL",
    }


def test_every_setting_and_every_other_variable_is_left_alone():
    environ = {f"STREAMREC_{name.upper()}": "1" for name in Settings.model_fields}
    environ |= {"PATH": "/bin", "KAFKA_HEAP_OPTS": "-Xmx1g", "MY_STREAMREC_THING": "1"}
    environ |= {f"streamrec_{name}": "1" for name in Settings.model_fields}  # as pydantic does
    assert unknown_variables(environ) == {}


def test_variables_read_outside_the_settings_are_not_reported(monkeypatch):
    monkeypatch.setattr(settings_module, "READ_ELSEWHERE", frozenset({"STREAMREC_BENCH_RUNS"}))
    assert unknown_variables({"STREAMREC_BENCH_RUNS": "3"}) == {}


def test_a_name_like_no_setting_points_at_the_table():
    assert unknown_variables({"STREAMREC_ZZZ": "1"}) == {"STREAMREC_ZZZ": None}


def test_the_warning_names_the_variable_and_the_setting_never_the_value(caplog):
    secret = "redis://:hunter2@example:6379/0"
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.settings"):
        warned = warn_unknown_variables({"STREAMREC_REDIS_ULR": secret})
    assert warned == ["STREAMREC_REDIS_ULR"]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "STREAMREC_REDIS_ULR" in record.getMessage()
    assert "did you mean STREAMREC_REDIS_URL?" in record.getMessage()
    assert "hunter2" not in caplog.text


def test_each_variable_is_warned_about_once_per_process(caplog):
    environ = {"STREAMREC_BATCHSIZE": "10"}
    with caplog.at_level(logging.WARNING, logger="streamrec.stream.settings"):
        assert warn_unknown_variables(environ) == ["STREAMREC_BATCHSIZE"]
        assert warn_unknown_variables(environ) == []
    assert len(caplog.records) == 1


def test_a_command_warns_at_start_with_the_closest_setting(tmp_path):
    """As a user meets it: `streamrec worker` with a misspelt variable (it then stops on
    the missing model, after loading its settings)."""
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", "worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "STREAMREC_MODEL_DIR": str(tmp_path / "none"),
            "STREAMREC_BATCHSIZE": "s3cr3t-value",
        },
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0  # no model
    [warning] = [line for line in proc.stderr.splitlines() if "STREAMREC_BATCHSIZE" in line]
    assert "WARNING" in warning
    assert "did you mean STREAMREC_BATCH_SIZE?" in warning
    assert "s3cr3t-value" not in proc.stderr
