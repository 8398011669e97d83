"""CPU retrieval benchmark: the index `streamrec index build --factory auto` would choose,
against exact search, by catalog size.

For each size it makes clustered synthetic item vectors (unit norm, a mixture of
``--clusters`` Gaussian clusters, as trained embeddings are clustered, unlike uniform
noise) and queries near items, then runs the same tuning step as the index build
(:func:`streamrec.index.tuning.tune_index`: every HNSW / IVF setting measured for recall@k against
exact search and queries/s on the same query batch). ``--model-dir`` adds what
``streamrec index build`` indexed for a trained model (its items, and catalog items it
indexed from their text) with one-item-history queries, as the build measures them.

    python benchmarks/retrieval_cpu.py                          # 10k, 100k, 1M items, d=64
    python benchmarks/retrieval_cpu.py --sizes 1000000 --dim 128 --threads 2
    python benchmarks/retrieval_cpu.py --model-dir models/current --catalog-size 100000 --sizes ""

Writes ``benchmarks/results/retrieval-cpu-<stamp>.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine, write_report  # noqa: E402
from streamrec.index.tuning import default_candidates, tune_index  # noqa: E402


def clustered(
    n: int, dim: int, clusters: int, queries: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(n, dim) unit item vectors around ``clusters`` centres, and queries near items."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    items = np.empty((n, dim), dtype=np.float32)
    step = 200_000
    for start in range(0, n, step):
        m = min(step, n - start)
        part = centres[rng.integers(0, clusters, m)]
        part += 0.5 * rng.standard_normal((m, dim)).astype(np.float32)
        items[start : start + m] = part / np.linalg.norm(part, axis=1, keepdims=True)
    q = items[rng.integers(0, n, queries)] + 0.3 * rng.standard_normal((queries, dim))
    return items, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def model_vectors(model_dir: Path, queries: int) -> tuple[Any, Any]:
    """The vectors ``streamrec index build`` indexed for the model (its items and the
    catalog items it indexed from their text), or the model's own items when the folder
    has no index yet; queries from one-item histories, as the build measures them."""
    from streamrec.engine.serving.model import ItemModel
    from streamrec.engine.serving.recommender import index_entries, index_queries
    from streamrec.index.faiss_index import FaissItemIndex

    model = ItemModel.load(model_dir)
    if (model_dir / "index" / "items.ids.json").is_file():
        _, vectors = FaissItemIndex.load(model_dir / "index").entries()
    else:
        _, vectors = index_entries(model)
    return vectors, index_queries(model, queries)


def to_markdown(result: dict[str, Any]) -> str:
    load = result["load_average"]
    lines = [
        f"# CPU retrieval, {result['stamp']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']} (1-minute load average {load['start'][0]:.1f} at the "
        f"start, {load['end'][0]:.1f} at the end); faiss {result['faiss']}, {result['threads']} "
        f"thread(s); recall@{result['k']} against exact search (`Flat`) on the same "
        f"{result['queries']:,} queries, queries/s as the best of two runs of the batch.",
        "",
        "| data | items | d | exact q/s | chosen | recall@k | q/s | speedup | build s | "
        "target reached |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for run in result["runs"]:
        c = run["choice"]
        lines.append(
            f"| {run['data']} | {run['n_items']:,} | {run['dim']} | {run['exact']['qps']:,.0f} | "
            f"{c['factory']} {c['params'] or ''} | {c['recall']:.4f} | {c['qps']:,.0f} | "
            f"{run['speedup']:.1f}x | {c['build_s']:.1f} | {'yes' if run['reached'] else 'no'} |"
        )
    lines += ["", "Every setting measured:", ""]
    lines += ["| data | items | index | setting | recall@k | q/s |", "|---|---:|---|---|---:|---:|"]
    for run in result["runs"]:
        for m in run["tried"]:
            lines.append(
                f"| {run['data']} | {run['n_items']:,} | {m['factory']} | {m['params'] or '-'} | "
                f"{m['recall']:.4f} | {m['qps']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in result["runs"]:
        for factory in dict.fromkeys(m["factory"] for m in run["tried"]):
            pts = [m for m in run["tried"] if m["factory"] == factory]
            ax.plot(
                [m["recall"] for m in pts],
                [m["qps"] for m in pts],
                marker="o",
                label=f"{run['data']} {run['n_items']:,}: {factory}",
            )
        ax.scatter([1.0], [run["exact"]["qps"]], marker="x", color="black")
    ax.axvline(result["target"], color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{result['k']} vs exact search")
    ax.set_ylabel("queries/s (log); x = exact search")
    ax.set_title(f"CPU retrieval, {result['threads']} thread(s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--catalog-size",
        type=int,
        default=0,
        help="with an ML-100K --model-dir: grow its catalog to this many items with "
        "synthetic ones indexed from their text, as benchmarks/e2e.py --catalog-size does",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    data: list[tuple[str, Any, Any]] = []
    if args.model_dir is not None:
        model_dir = args.model_dir
        with tempfile.TemporaryDirectory(prefix="streamrec-retrieval-") as scratch:
            if args.catalog_size:
                from benchmarks.e2e import grow_catalog
                from streamrec.engine.offline.datasets import load_movielens_100k

                catalog = load_movielens_100k().catalog
                model_dir, _ = grow_catalog(model_dir, catalog, args.catalog_size, Path(scratch))
            vectors, queries = model_vectors(model_dir, args.queries)
        grown = f", catalog grown to {args.catalog_size:,}" if args.catalog_size else ""
        data.append((f"model {args.model_dir.name}{grown}", vectors, queries))
    for n in (int(s) for s in args.sizes.split(",") if s):
        items, queries = clustered(n, args.dim, args.clusters, args.queries, seed=n)
        data.append(("synthetic", items, queries))
    load_start = os.getloadavg()
    runs = []
    for name, vectors, queries in data:
        say(f"{name}: {len(vectors):,} x {vectors.shape[1]}")
        started = time.perf_counter()
        report = tune_index(
            vectors,
            queries,
            k=args.k,
            target_recall=args.target,
            candidates=default_candidates(len(vectors)),
            progress=lambda line: say(f"  {line}"),
        )
        runs.append({"data": name, **report.as_dict(), "seconds": time.perf_counter() - started})
    result = {
        "stamp": stamp,
        "command": " ".join(["python", "benchmarks/retrieval_cpu.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "faiss": faiss.__version__,
        "threads": args.threads,
        "k": args.k,
        "target": args.target,
        "queries": args.queries,
        "runs": runs,
    }
    base = write_report(args.out_dir, f"retrieval-cpu-{stamp}", result, to_markdown(result))
    plot(result, base.with_suffix(".png"))
    say(f"wrote {base}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
