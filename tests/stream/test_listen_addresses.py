"""The API and the worker's metrics listen on the loopback unless told otherwise
(STREAMREC_API_HOST, STREAMREC_METRICS_HOST; containers set 0.0.0.0 in deploy/)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.stream import api as api_module
from streamrec.stream.cli.main import main
from streamrec.stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
#: Another loopback address: a server listening only there is refused on 127.0.0.1.
OTHER_LOOPBACK = "127.0.0.2"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def no_streamrec_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"STREAMREC_{name.upper()}", raising=False)


@pytest.mark.usefixtures("no_streamrec_environment")
def test_both_listen_on_the_loopback_by_default():
    settings = Settings()
    assert settings.api_host == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    """``main`` sets up logging for the process: put the root logger back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("no_streamrec_environment", "restored_root_logger")
def test_the_host_flag_wins_over_the_setting(monkeypatch):
    served: list[str] = []
    monkeypatch.setattr(api_module, "run_api", lambda settings, host, port: served.append(host))
    monkeypatch.setenv("STREAMREC_API_HOST", OTHER_LOOPBACK)
    main(["api"])
    main(["api", "--host", "127.0.0.1"])
    assert served == [OTHER_LOOPBACK, "127.0.0.1"]


@pytest.fixture
def api_without_host_flag(tmp_path) -> Iterator[int]:
    """``streamrec api --port PORT`` (no --host) with STREAMREC_API_HOST=127.0.0.2; it
    needs neither Redis nor Kafka to start."""
    port = free_port(OTHER_LOOPBACK)
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec", "api", "--port", str(port)],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "STREAMREC_API_HOST": OTHER_LOOPBACK,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not answers(OTHER_LOOPBACK, port):
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_streamrec_api_listens_only_where_the_setting_says(api_without_host_flag):
    port = api_without_host_flag
    assert answers(OTHER_LOOPBACK, port)
    assert not answers("127.0.0.1", port)
