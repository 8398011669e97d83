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
    "streamrec.stream",
    "requests",
    "httpx",
    "socket",
    "urllib",
}


def imported_roots(path: Path) -> set[str]:
    """The top-level packages a file imports; the stream layer counts as ``streamrec.stream``."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            is_stream = name == "streamrec.stream" or name.startswith("streamrec.stream.")
            roots.add("streamrec.stream" if is_stream else name.split(".")[0])
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
            if path.parent.name == "cli":
                continue  # the command line: user-facing terminal output is its job
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_engine_never_reads_the_environment():
    for package in PURE:
        for path in (ROOT / package).rglob("*.py"):
            assert "os.environ" not in path.read_text(), path


def module_imports() -> dict[str, set[str]]:
    """Every streamrec module and the streamrec modules it imports (anywhere in the file)."""
    import grimp

    graph = grimp.build_graph("streamrec")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def test_no_import_cycles():
    """No module reaches itself through imports (strongly connected components of size 1).

    Package ``__init__`` modules that re-export their submodules are left out: importing a
    submodule does not run into its parent's re-exports in a way that can break."""
    imports = module_imports()
    packages = {m for m in imports if any(o.startswith(m + ".") for o in imports)}
    edges = {
        m: {t for t in ts if t not in packages} for m, ts in imports.items() if m not in packages
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    assert cycles == []


def test_modules_stay_small():
    """No module passes ~400 lines unless it is one thing (listed here, with why)."""
    one_thing = {
        # one dataclass-heavy model format and its loading/saving
        "engine/serving/model.py",
        # the benchmark-free offline pipeline of one command each
        "engine/offline/training.py",
        "engine/offline/evaluation_runner.py",
        "engine/offline/datasets.py",
        "engine/offline/evaluation.py",
        "engine/offline/recbole_sasrec.py",
        "engine/offline/hybrid_training.py",
        "engine/serving/recommender.py",
        "engine/serving/ranker.py",
        "stream/worker/pipeline.py",
    }
    long = {
        str(path.relative_to(ROOT))
        for package in ("engine", "index", "stream")
        for path in (ROOT / package).rglob("*.py")
        if len(path.read_text().splitlines()) > 420
    }
    assert long - one_thing == set()
