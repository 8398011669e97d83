"""The demo listens where the README's commands look (9092, 6379) when it can, and says
where it listens in lines to paste; tests keep their random ports."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

from streamrec.stream.cli.demo import _moved, _start_preferring, export_lines
from streamrec.stream.cli.local_infra import (
    STANDARD_KAFKA_PORT,
    STANDARD_REDIS_PORT,
    LocalInfraError,
    LocalService,
    port_is_free,
    preferred_port,
)
from streamrec.stream.settings import Settings


def test_standard_ports_are_the_settings_defaults():
    defaults = Settings()
    assert defaults.kafka_bootstrap == f"127.0.0.1:{STANDARD_KAFKA_PORT}"
    assert defaults.redis_url.get_secret_value() == f"redis://127.0.0.1:{STANDARD_REDIS_PORT}/0"


def test_the_standard_port_when_free_else_a_random_one():
    assert preferred_port("KAFKA_PORT", 9092, {}, is_free=lambda p: True) == "9092"
    assert preferred_port("KAFKA_PORT", 9092, {}, is_free=lambda p: False) is None


def test_an_explicit_port_wins_without_a_check():
    def never(port: int) -> bool:
        raise AssertionError(port)

    assert preferred_port("REDIS_PORT", 6379, {"REDIS_PORT": "7001"}, is_free=never) == "7001"
    assert preferred_port("REDIS_PORT", 6379, {"REDIS_PORT": " "}, is_free=lambda p: True) == (
        "6379"
    )


def test_a_port_with_a_listener_is_not_free():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("0.0.0.0", 0))  # noqa: S104 - a listener on every address
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_export_lines_point_the_settings_at_the_demo(tmp_path: Path):
    model_dir = tmp_path / "my models" / "current"
    lines = export_lines("127.0.0.1:9092", "redis://127.0.0.1:6379/0", model_dir)
    assert lines[:2] == [
        "export STREAMREC_KAFKA_BOOTSTRAP=127.0.0.1:9092",
        "export STREAMREC_REDIS_URL=redis://127.0.0.1:6379/0",
    ]
    # the shell reads every value back unchanged (a space in a path is quoted)
    words = [shlex.split(line) for line in lines]
    assert all(w[0] == "export" and len(w) == 2 for w in words)
    assert dict(w[1].split("=", 1) for w in words)["STREAMREC_MODEL_DIR"] == str(model_dir)


def free(port: int) -> bool:
    return True


def busy(port: int) -> bool:
    return False


class FakeStart:
    """Records the env each start gets; fails the first ``failures`` starts."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[dict[str, str] | None] = []
        self.failures = failures

    def __call__(self, state_dir: Path, env: dict[str, str] | None = None) -> LocalService:
        self.calls.append(env)
        if len(self.calls) <= self.failures:
            msg = "kafka.sh start failed (1): Address already in use"
            raise LocalInfraError(msg)
        port = (env or {}).get("KAFKA_PORT") or "40001"
        return LocalService("kafka.sh", state_dir, f"127.0.0.1:{port}")


def test_demo_starts_on_the_standard_port_when_free(tmp_path):
    start = FakeStart()
    service = _start_preferring(start, tmp_path, "KAFKA_PORT", 9092, environ={}, is_free=free)
    assert service.address == "127.0.0.1:9092"
    assert start.calls == [{"KAFKA_PORT": "9092"}]


def test_demo_falls_back_to_a_random_port_when_the_standard_one_is_busy(tmp_path):
    start = FakeStart()
    service = _start_preferring(start, tmp_path, "KAFKA_PORT", 9092, environ={}, is_free=busy)
    assert service.address == "127.0.0.1:40001"
    assert start.calls == [None]


def test_demo_falls_back_when_the_standard_port_is_taken_while_starting(tmp_path):
    start = FakeStart(failures=1)
    service = _start_preferring(start, tmp_path, "KAFKA_PORT", 9092, environ={}, is_free=free)
    assert service.address == "127.0.0.1:40001"
    assert start.calls == [{"KAFKA_PORT": "9092"}, {"KAFKA_PORT": ""}]


def test_an_explicit_port_is_left_to_the_script(tmp_path):
    start = FakeStart()
    environ = {"KAFKA_PORT": "7777"}
    _start_preferring(start, tmp_path, "KAFKA_PORT", 9092, environ=environ, is_free=free)
    assert start.calls == [None]  # the script reads KAFKA_PORT from the environment


def test_the_demo_says_when_a_service_is_not_on_its_standard_port(tmp_path):
    def note(name: str, address: str) -> str:
        return _moved(name, LocalService("x.sh", tmp_path, address))

    assert note("Kafka", "127.0.0.1:9092") == ""
    assert note("Redis", "redis://127.0.0.1:6379/0") == ""
    assert "not 9092" in note("Kafka", "127.0.0.1:19092")
    assert "not 6379" in note("Redis", "redis://127.0.0.1:63790/0")  # not a prefix match
