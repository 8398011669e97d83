"""The worker's Prometheus endpoint listens where STREAMREC_METRICS_HOST says, and only
there (the default is the loopback; containers set 0.0.0.0 in deploy/)."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from tests.conftest import WorkerProcess

pytestmark = pytest.mark.integration

#: Another loopback address: a server listening only there is refused on 127.0.0.1.
OTHER_LOOPBACK = "127.0.0.2"


def test_the_metrics_listen_only_on_the_configured_address(settings, tmp_path):
    worker = WorkerProcess(
        settings.model_copy(update={"metrics_host": OTHER_LOOPBACK}), tmp_path / "worker.log"
    )
    try:
        url = f"http://{OTHER_LOOPBACK}:{settings.metrics_port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            assert worker.proc.poll() is None, worker.log()
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                    assert b"streamrec_events_consumed" in answer.read()
                break
            except OSError:
                assert time.monotonic() < deadline, worker.log()
                time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", settings.metrics_port), timeout=1).close()
        assert f"metrics on {OTHER_LOOPBACK}:{settings.metrics_port}/metrics" in worker.log()
    finally:
        worker.stop()
