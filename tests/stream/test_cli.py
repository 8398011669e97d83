"""The command line explains itself and fails with messages that name the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def streamrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def test_help_lists_every_command():
    out = streamrec("--help").stdout
    for command in (
        "demo",
        "worker",
        "train",
        "index build",
        "evaluate",
        "topics",
        "replay",
        "watch",
        "explain",
    ):
        assert command in out


def test_invalid_configuration_names_the_variable():
    proc = streamrec("worker", env={"STREAMREC_KAFKA_BOOTSTRAP": "nohostport"})
    assert proc.returncode != 0
    assert "STREAMREC_KAFKA_BOOTSTRAP" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_model_names_the_commands_to_run(tmp_path):
    proc = streamrec("worker", env={"STREAMREC_MODEL_DIR": str(tmp_path / "nope")})
    assert proc.returncode != 0
    assert "streamrec train" in proc.stderr
    assert "STREAMREC_MODEL_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_an_unreachable_broker_names_the_address_and_the_setting(shop_model):
    proc = streamrec(
        "worker",
        env={
            "STREAMREC_MODEL_DIR": str(shop_model.model_dir),
            "STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "STREAMREC_METRICS_PORT": "0",
        },
    )
    assert proc.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in proc.stderr
    assert "STREAMREC_KAFKA_BOOTSTRAP" in proc.stderr
