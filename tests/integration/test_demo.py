"""The README's first command, end to end: `streamrec demo` on a fresh state directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_streams_and_shows_reasons_then_stops_everything(tmp_path: Path):
    state = tmp_path / "state"
    # The demo prefers 9092 and 6379; a test takes random ports, as every test does.
    kafka_port, redis_port = free_port(), free_port()
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
        env={**os.environ, "KAFKA_PORT": str(kafka_port), "REDIS_PORT": str(redis_port)},
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "model" / "model.json").is_file()  # trained because none existed
    # where the demo runs, as lines to paste into another terminal, before anything else
    exports = (
        f"export STREAMREC_KAFKA_BOOTSTRAP=127.0.0.1:{kafka_port}",
        f"export STREAMREC_REDIS_URL=redis://127.0.0.1:{redis_port}/0",
        f"export STREAMREC_MODEL_DIR={tmp_path / 'model'}",
    )
    for line in exports:
        assert line in out
    assert out.index(exports[0]) < out.index("published 1,682 catalog items")
    # each list under the event that triggered it: "<user> viewed <title>"
    assert re.search(r"\b\d+ (viewed|clicked|added|bought)\b", out), out[-4000:]
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
