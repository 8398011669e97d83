"""The dependency rule and house rules, checked so they stay true."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE = ("engine", "index")
IO_MODULES = {
    "faust",
    "aiokafka",
    "redis",
    "prometheus_client",
    "mode",
    "stream",
    "requests",
    "httpx",
    "socket",
    "urllib",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_and_index_import_no_io_framework():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & IO_MODULES)
        for package in PURE
        for path in (ROOT / package).rglob("*.py")
        if imported_roots(path) & IO_MODULES
    }
    assert offenders == {}


def test_import_linter_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_library_code_never_prints():
    offenders = []
    for package in ("engine", "index", "stream"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name in {"cli.py", "demo.py", "watch.py"}:
                continue  # user-facing terminal output is their job
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_engine_never_reads_the_environment():
    for package in PURE:
        for path in (ROOT / package).rglob("*.py"):
            assert "os.environ" not in path.read_text(), path
