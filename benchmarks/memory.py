"""Memory: bytes per active user in Redis and bytes per item in the index.

Redis. Starts its own redis-server (deploy/local), builds the worker's pipeline
(``streamrec.stream.worker.service.build_pipeline``: the same store, model and ranking code as a
worker,
without Kafka), feeds it the first ``--events`` MovieLens-100K events in time order in
micro-batches, and then measures every key with ``MEMORY USAGE``: per user by key kind
(history, seen and purchased sets, the latest list, the user vector, dedupe markers,
impressions), and the shared keys (catalog, trending, co-occurrence) per item.

Index. Builds each index type over ``--index-items`` synthetic vectors of the model's
dimension and reports the serialized FAISS index plus the id table and the vector copy the
index keeps for online updates, per item.

    python benchmarks/memory.py --model-dir models/current
    python benchmarks/memory.py --model-dir models/current --events 100000 --index-items 1000000

Writes ``benchmarks/results/memory-<stamp>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine, missing_model, write_report  # noqa: E402


def _kind(key: str) -> str:
    """``sr:{u:USER}:h`` -> "user: h"; ``sr:co:v:ITEM`` -> "co-occurrence"; ..."""
    if key.startswith("sr:{u:"):
        suffix = key.split("}:", 1)[1]
        return "user: " + ("ev (dedupe markers)" if suffix.startswith("ev:") else suffix)
    if key.startswith("sr:co:"):
        return "items: co-occurrence"
    return f"shared: {key}"


async def _feed(settings: Any, events: Any, batch: int) -> tuple[int, float]:
    from benchmarks.pipeline_feed import event_messages, ready_pipeline

    pipeline = await ready_pipeline(settings)
    started = time.perf_counter()
    rows = events.to_dict("records")
    for start in range(0, len(rows), batch):
        await pipeline.handle_events(event_messages(rows[start : start + batch], start))
    seconds = time.perf_counter() - started
    await pipeline.close()
    await pipeline.store.close()
    return len(rows), seconds


def redis_memory(model_dir: Path, n_events: int, batch: int) -> dict[str, Any]:
    import redis as redis_sync

    from benchmarks.pipeline_feed import bench_settings
    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.stream.cli.local_infra import start_redis

    state = Path(tempfile.mkdtemp(prefix="streamrec-memory-"))
    server = start_redis(state / "redis")
    try:
        settings = bench_settings(server.address, model_dir, max_impressions=3)
        events = load_movielens_100k().events.iloc[:n_events]
        fed, seconds = asyncio.run(_feed(settings, events, batch))
        client = redis_sync.Redis.from_url(server.address)
        by_kind: dict[str, int] = defaultdict(int)
        keys_by_kind: dict[str, int] = defaultdict(int)
        users: set[str] = set()
        for key in client.scan_iter(match="sr:*", count=1000):
            name = key.decode()
            size = int(client.memory_usage(key, samples=0) or 0)
            kind = _kind(name)
            by_kind[kind] += size
            keys_by_kind[kind] += 1
            if name.startswith("sr:{u:"):
                users.add(name[len("sr:{u:") : name.index("}")])
        info = client.info("memory")
        client.close()
        n_users = max(len(users), 1)
        user_bytes = sum(v for k, v in by_kind.items() if k.startswith("user:"))
        return {
            "events": fed,
            "seconds": seconds,
            "users": len(users),
            "events_per_user": fed / n_users,
            "history_length": settings.history_length,
            "dedupe_ttl_s": settings.dedupe_ttl_s,
            "bytes_per_user": user_bytes / n_users,
            "by_kind_per_user": {
                k: v / n_users for k, v in sorted(by_kind.items()) if k.startswith("user:")
            },
            "shared_bytes": {k: v for k, v in sorted(by_kind.items()) if not k.startswith("user:")},
            "keys": dict(sorted(keys_by_kind.items())),
            "used_memory": int(info["used_memory"]),
        }
    finally:
        server.stop()


def index_memory(dim: int, n_items: int) -> list[dict[str, Any]]:
    import faiss

    from streamrec.index.faiss_index import FaissItemIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{i}" for i in range(n_items)]
    nlist = 2 ** round(np.log2(2 * np.sqrt(n_items)))
    out = []
    for factory in ("Flat", "HNSW32", f"IVF{nlist},Flat"):
        index = FaissItemIndex(dim, factory)
        index.upsert(ids, vectors)
        faiss_bytes = len(faiss.serialize_index(index._index))
        table_bytes = int(vectors.nbytes)  # the vector copy kept for updates and reasons
        id_bytes = sum(sys.getsizeof(i) for i in ids) + sys.getsizeof({}) + 100 * n_items
        out.append(
            {
                "factory": factory,
                "items": n_items,
                "dim": dim,
                "faiss_bytes_per_item": faiss_bytes / n_items,
                "vector_copy_bytes_per_item": table_bytes / n_items,
                "ids_bytes_per_item_estimate": id_bytes / n_items,
            }
        )
    return out


def to_markdown(result: dict[str, Any]) -> str:
    r = result["redis"]
    lines = [
        f"# Memory, {result['stamp']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Model: `{result['model_dir']}`, version {result['model_version']}",
        "",
        f"## Redis: {r['bytes_per_user']:,.0f} bytes per active user",
        "",
        f"{r['events']:,} MovieLens-100K events (time order) through the worker's pipeline in "
        f"{r['seconds']:.0f} s; {r['users']:,} users, {r['events_per_user']:.1f} events each "
        f"on average; history length {r['history_length']}, impressions cap on; dedupe "
        f"markers live {r['dedupe_ttl_s'] // 86400} days. `MEMORY USAGE` of every key:",
        "",
        "| per user | bytes |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:,.0f} |" for k, v in r["by_kind_per_user"].items()]
    lines += [
        f"| **total** | **{r['bytes_per_user']:,.0f}** |",
        "",
        "| shared | bytes |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:,} |" for k, v in r["shared_bytes"].items()]
    lines += [
        "",
        f"redis `used_memory` at the end: {r['used_memory']:,} bytes.",
        "",
        "## Index: bytes per item",
        "",
        "| index | items | d | FAISS index | vector copy | ids (estimate) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in result["index"]:
        lines.append(
            f"| {m['factory']} | {m['items']:,} | {m['dim']} | {m['faiss_bytes_per_item']:,.0f} | "
            f"{m['vector_copy_bytes_per_item']:,.0f} | {m['ids_bytes_per_item_estimate']:,.0f} |"
        )
    lines += [
        "",
        "FAISS index: the serialized index (`faiss.serialize_index`), the memory it holds. "
        "Vector copy: `streamrec.index.table.ItemTable` keeps each vector for online upserts, "
        "compaction and reasons. Ids: Python strings and the id-to-row dict, estimated.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "current")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--index-items", type=int, default=100_000)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    from streamrec.engine.serving.model import ItemModel

    if (problem := missing_model(args.model_dir)) is not None:
        print(problem, file=sys.stderr)
        return 1
    model = ItemModel.load(args.model_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "stamp": stamp,
        "command": " ".join(["python", "benchmarks/memory.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "model_dir": str(args.model_dir),
        "model_version": model.version,
        "redis": redis_memory(args.model_dir.resolve(), args.events, args.batch_size),
        "index": index_memory(model.query_dim + 1, args.index_items),
    }
    write_report(args.out_dir, f"memory-{stamp}", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
