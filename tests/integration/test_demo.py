"""The README's first command, end to end: `streamrec demo` on a fresh state directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_streams_and_shows_reasons_then_stops_everything(tmp_path: Path):
    state = tmp_path / "state"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "demo",
            "--events",
            "60",
            "--rate",
            "200",
            "--state-dir",
            str(state),
            "--model-dir",
            str(tmp_path / "model"),
            "--metrics-port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "model" / "model.json").is_file()  # trained because none existed
    assert "published 1,682 catalog items" in out
    assert "60 lists received" in out
    assert "Because you" in out or "Popular with other users" in out
    assert "stopped everything the demo started" in out
    for service in ("kafka", "redis"):
        status = subprocess.run(
            ["bash", str(ROOT / "deploy/local" / f"{service}.sh"), "status", str(state / service)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 1, status.stdout  # stopped
