"""Shared fixtures: the real local Kafka broker, redis-server and Redis Cluster
(deploy/local), a trained model, and a worker process. Nothing here mocks Kafka or Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from streamrec.stream.cli.local_infra import (
    LocalService,
    start_kafka,
    start_redis,
    start_redis_cluster,
)
from streamrec.stream.settings import Settings
from tests import redis_cluster, shop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    service = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    service = start_redis(tmp_path_factory.mktemp("redis"))
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_service: LocalService) -> str:
    """The session redis-server, emptied for each test."""
    client = redis.Redis.from_url(redis_service.address)
    client.flushall()
    client.close()
    return redis_service.address


@pytest.fixture(scope="session")
def redis_cluster_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A Redis Cluster of 3 masters and 3 replicas (deploy/local/redis-cluster.sh)."""
    service = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield service
    service.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_service: LocalService) -> str:
    """The session Redis Cluster's ``redis+cluster://`` URL (all six nodes), every master
    emptied for each test. Waits first until the cluster is whole again after a test that
    failed a master over (that test restarts the node it killed)."""
    url = redis_cluster_service.address
    redis_cluster.wait_cluster_ok(url, timeout=30)
    redis_cluster.flush_masters(url)
    return url


@pytest.fixture(scope="session")
def shop_model(tmp_path_factory: pytest.TempPathFactory) -> shop.TrainedShop:
    return shop.train(tmp_path_factory.mktemp("shop-model"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(kafka: LocalService, redis_url: str, shop_model: shop.TrainedShop) -> Settings:
    """Settings with topic names and a consumer group unique to this test."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=kafka.address,
        redis_url=redis_url,  # type: ignore[arg-type]
        model_dir=shop_model.model_dir,
        metrics_port=free_port(),
        app_id=f"streamrec-test-{tag}",
        topic_events=f"events-{tag}",
        topic_items=f"items-{tag}",
        topic_recommendations=f"recs-{tag}",
        topic_dlq=f"dlq-{tag}",
        # Control requests too: a worker of a new group reads the control topic from its
        # start, so another test's forget request would count as this test's.
        topic_control=f"control-{tag}",
        topic_reason_updates=f"reason-updates-{tag}",
        topic_partitions=2,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STREAMREC_{name.upper()}"] = str(value)
    return env


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamrec ARGS`` as a user runs it, configured by ``settings``'s environment."""
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "streamrec", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class WorkerProcess:
    """A `streamrec worker` subprocess with its log file and metrics endpoint."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.log_path = log_path
        env = {**settings_env(settings), **(extra_env or {})}
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of the sample with exactly these labels, 0.0 when absent."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def wait_metrics(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.metrics()
            except OSError:
                time.sleep(0.2)
            else:
                return
        pytest.fail(f"worker metrics did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker", **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{name}.log", extra_env)
        started.append(worker)
        worker.wait_metrics()
        return worker

    yield start
    for worker in started:
        worker.stop()
