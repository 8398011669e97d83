"""The built wheel, installed from outside the repository, is one `streamrec` package.

A fresh virtual environment outside the repository (where the working directory cannot
hide a broken import) gets the wheel with its base dependencies only: the client and the
contracts import, the generic names ``engine``, ``stream`` and ``index`` do not exist, and
none of the heavy worker dependencies came along.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slim_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel built from this checkout and its base dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(ROOT)],
        check=True, cwd=work,
    )  # fmt: skip
    [wheel] = (work / "dist").glob("streamrec-*.whl")
    env = work / "venv"
    venv.create(env, with_pip=True)
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(wheel)],
        check=True, cwd=work,
    )  # fmt: skip
    return env


def run(env: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env / "bin" / "python"), "-c", code],
        capture_output=True, text=True, check=False, cwd=env.parent,
    )  # fmt: skip


def test_the_client_imports_from_the_slim_install(slim_env: Path) -> None:
    proc = run(
        slim_env,
        "import streamrec.client as c, streamrec; "
        "assert streamrec.EventProducer is c.EventProducer; print(c.__file__)",
    )
    assert proc.returncode == 0, proc.stderr
    assert str(ROOT) not in proc.stdout  # the installed copy, not this checkout
    assert "site-packages" in proc.stdout


@pytest.mark.parametrize("name", ["engine", "stream", "index"])
def test_no_generic_top_level_names(slim_env: Path, name: str) -> None:
    proc = run(slim_env, f"import {name}")
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr


def test_the_base_install_brings_no_heavy_dependency(slim_env: Path) -> None:
    proc = subprocess.run(
        [str(slim_env / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {line.split("==")[0].lower() for line in proc.stdout.splitlines()}
    assert {"aiokafka", "msgspec", "pydantic-settings"} <= installed
    heavy = {"torch", "faiss-cpu", "faust-streaming", "fastapi", "matplotlib", "numpy", "redis"}
    assert installed & heavy == set()


def test_the_wheel_carries_the_message_schemas(slim_env: Path) -> None:
    proc = run(
        slim_env,
        "import importlib.resources as r; "
        "print(sorted(p.name for p in r.files('streamrec.stream').joinpath('schemas').iterdir()))",
    )
    assert proc.returncode == 0, proc.stderr
    assert "event.schema.json" in proc.stdout
    assert "recommendation.schema.json" in proc.stdout


def test_a_command_that_needs_an_extra_names_it(slim_env: Path) -> None:
    help_ = subprocess.run(
        [str(slim_env / "bin" / "streamrec"), "--help"], capture_output=True, text=True,
        check=False, cwd=slim_env.parent,
    )  # fmt: skip
    assert help_.returncode == 0, help_.stderr
    assert "worker" in help_.stdout
    worker = subprocess.run(
        [str(slim_env / "bin" / "streamrec"), "worker"], capture_output=True, text=True,
        check=False, cwd=slim_env.parent, timeout=60,
    )  # fmt: skip
    assert worker.returncode != 0
    assert "pip install 'streamrec[worker]'" in worker.stderr
    assert "Traceback" not in worker.stderr
