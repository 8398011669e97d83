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
    """Every streamrec module and the streamrec modules it imports (anywhere in the file,
    except under ``if TYPE_CHECKING:``, which never runs)."""
    import grimp

    graph = grimp.build_graph("streamrec", exclude_type_checking_imports=True)
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
    """No module passes ~400 lines unless it is one thing: the ones listed, each with why."""
    one_thing = {
        # the model object: its arrays, embedding, scoring and loading (format apart)
        "engine/serving/model.py",
        # online ranking of one batch: candidates, filters, fill and reasons per list
        "engine/serving/recommender.py",
        # the learned second-stage ranker: its features, table and training
        "engine/serving/ranker.py",
        # one training procedure each, step by step
        "engine/offline/training.py",
        "engine/offline/hybrid_training.py",
        # one command's evaluation run (splits, every model, report)
        "engine/offline/evaluation_runner.py",
        # data set loaders and their checks
        "engine/offline/datasets.py",
        # full-ranking metrics with their intervals
        "engine/offline/evaluation.py",
        # the RecBole SASRec baseline and its workarounds
        "engine/offline/recbole_sasrec.py",
        # the worker's batch: apply, rank, publish, retry event by event
        "stream/worker/pipeline.py",
    }
    long = {
        str(path.relative_to(ROOT))
        for package in ("engine", "index", "stream")
        for path in (ROOT / package).rglob("*.py")
        if len(path.read_text().splitlines()) > 420
    }
    assert long - one_thing == set()
