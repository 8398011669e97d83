"""What the sequential encoder costs per event: in-process ranking, with and without it.

Loads a trained model folder (``streamrec train`` or ``streamrec evaluate --save-model``),
builds its Flat index in memory and ranks micro-batches of real ML-100K user histories the
way the worker does (``Recommender.recommend``: user vectors, one index search per batch,
filters, reasons). The same model is timed twice: as trained, and with the encoder
removed (the co-occurrence part alone), so the difference is the encoder's cost.

    python benchmarks/ranking_cost.py --model-dir .cache/ours-ml100k --batch 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine  # noqa: E402
from streamrec.engine.offline.datasets import load_movielens_100k  # noqa: E402
from streamrec.engine.serving.catalog import Catalog, catalog_items  # noqa: E402
from streamrec.engine.serving.model import ItemModel  # noqa: E402
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries  # noqa: E402
from streamrec.engine.types import Interaction, UserState  # noqa: E402
from streamrec.index.device import set_cpu_threads  # noqa: E402
from streamrec.index.faiss_index import FaissItemIndex  # noqa: E402


def _states(history: int) -> list[UserState]:
    data = load_movielens_100k()
    states = []
    for user, group in data.events.groupby("user_id", sort=False):
        recent = group.tail(history)
        inter = tuple(
            Interaction(str(i), str(t), int(ts))  # type: ignore[arg-type]
            for i, t, ts in zip(recent["item_id"], recent["type"], recent["ts"], strict=True)
        )
        seen = frozenset(str(i) for i in group["item_id"])
        states.append(UserState(str(user), inter, frozenset(), seen))
    return states


def _time(model: ItemModel, states: list[UserState], batch: int, rounds: int) -> list[float]:
    ids, vectors = index_entries(model)
    index = FaissItemIndex(vectors.shape[1])
    index.upsert(ids, vectors)
    rec = Recommender(model, index, Catalog(), RankingParams(k=10))
    for item in catalog_items(load_movielens_100k().catalog):
        rec.apply_item(item)
    per_event: list[float] = []
    for _ in range(rounds):
        for start in range(0, len(states) - batch + 1, batch):
            chunk = states[start : start + batch]
            t0 = time.perf_counter()
            rec.recommend(chunk, ["t"] * len(chunk), now_ms=0)
            per_event.append((time.perf_counter() - t0) / len(chunk) * 1000.0)
    return per_event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / ".cache" / "ours-ml100k"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    model = ItemModel.load(Path(args.model_dir))
    states = _states(args.history)
    rows = []
    variants = [("as trained", model)]
    if model.encoder is not None:
        variants.append(("encoder removed", replace(model, encoder=None, sequence_weight=0.0)))
    for name, variant in variants:
        times = _time(variant, states, args.batch, args.rounds)
        rows.append(
            {
                "variant": name,
                "query_dim": variant.query_dim,
                "ms_per_event_median": statistics.median(times),
                "ms_per_event_p95": sorted(times)[int(0.95 * (len(times) - 1))],
                "batches": len(times),
            }
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "model_version": model.version,
        "batch": args.batch,
        "threads": args.threads,
        "history": args.history,
        "machine": machine(),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ranking-cost-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Ranking cost per event, batches of {args.batch}, {args.threads} thread(s), model "
        f"{model.version}, on {report['machine']}",
        "",
        "| variant | query dim | ms/event (median) | ms/event (p95) | batches |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['variant']} | {r['query_dim']} | {r['ms_per_event_median']:.3f} | "
        f"{r['ms_per_event_p95']:.3f} | {r['batches']} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    (out / f"ranking-cost-{stamp}.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
