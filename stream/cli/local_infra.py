"""Start and stop the local Kafka broker, redis-server and Redis Cluster through
deploy/local's scripts.

Used by ``streamrec demo`` and by the test fixtures (the Redis Cluster, three masters and
three replicas, only by the tests); production points the worker at real clusters with
STREAMREC_KAFKA_BOOTSTRAP / STREAMREC_REDIS_URL instead.

Ports: the scripts take ``KAFKA_PORT`` / ``REDIS_PORT`` from the environment and pick
free random loopback ports without them, which is what tests want (they never collide);
the Redis Cluster's six nodes always get free random ports.
The demo asks :func:`preferred_port` for the standard ports (9092, 6379), so that the
settings' defaults reach it from another terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "local"


#: The standard ports, which the settings' defaults point at.
STANDARD_KAFKA_PORT = 9092
STANDARD_REDIS_PORT = 6379


class LocalInfraError(RuntimeError):
    """A local service failed to start; the message carries the script's error output."""


@dataclass
class LocalService:
    """A running local service: its script, state directory and address."""

    script: str
    state_dir: Path
    address: str

    def stop(self) -> None:
        _run(self.script, "stop", self.state_dir)

    def resume(self) -> None:
        """Start a stopped Kafka broker again on its data and address (a restart; the
        local redis-server and Redis Cluster keep no data, so they have no resume)."""
        _run(self.script, "resume", self.state_dir)


def _run(script: str, action: str, state_dir: Path, env: dict[str, str] | None = None) -> str:
    path = SCRIPTS / script
    if not path.is_file():
        msg = f"{path} not found: run from a source checkout of streamrec"
        raise LocalInfraError(msg)
    proc = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(path), action, str(state_dir)],  # noqa: S607 - bash from PATH
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        msg = f"{script} {action} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        raise LocalInfraError(msg)
    return proc.stdout.strip()


def start_kafka(state_dir: Path, env: dict[str, str] | None = None) -> LocalService:
    """Start a fresh single-node KRaft broker; address is host:port."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return LocalService("kafka.sh", state_dir, _run("kafka.sh", "start", state_dir, env))


def start_redis(state_dir: Path, env: dict[str, str] | None = None) -> LocalService:
    """Start a redis-server without persistence; address is a redis:// URL."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return LocalService("redis.sh", state_dir, _run("redis.sh", "start", state_dir, env))


def start_redis_cluster(state_dir: Path, env: dict[str, str] | None = None) -> LocalService:
    """Start a Redis Cluster of 3 masters and 3 replicas without persistence, and wait
    until it serves every slot; address is a
    ``redis+cluster://127.0.0.1:P1,...,127.0.0.1:P6`` URL naming all six nodes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return LocalService(
        "redis-cluster.sh", state_dir, _run("redis-cluster.sh", "start", state_dir, env)
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (the usual race applies).

    SO_REUSEADDR as Kafka and redis-server set it: a port whose last connections are in
    TIME_WAIT counts as free, a port something listens on (on any address) does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def preferred_port(
    variable: str,
    standard: int,
    environ: Mapping[str, str],
    is_free: Callable[[int], bool] = port_is_free,
) -> str | None:
    """The port to ask a deploy/local script for: ``environ[variable]`` when set, else the
    standard port when it is free, else None (the script picks a free random port)."""
    explicit = environ.get(variable, "").strip()
    if explicit:
        return explicit
    return str(standard) if is_free(standard) else None
