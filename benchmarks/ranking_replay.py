"""In-process ranking CPU per event on a fixed replay, and a digest of every list.

Replays the first ``--events`` MovieLens-100K events in time order through
``Recommender.recommend`` in micro-batches of ``--batch``, as the worker would see them:
each user's history (last 50), purchases and seen items grow event by event, and every
batch gets the item statistics (trending, bought/viewed together) an in-memory counter
holds at that point. Each list is encoded with the worker's encoder. No Kafka, no Redis:
only the ranking code, so two commits compare on CPU alone.

Reported: CPU us per event (process time of the ranking and encoding, the minimum and
median of ``--rounds`` rounds; this VM is noisy, and the minimum is the least disturbed)
and the SHA-256 of all encoded lists. Equal digests on two commits mean byte-identical
lists on this replay; ``--lists-out`` writes the lists themselves (one JSON per line) to
compare where they differ.

    python benchmarks/ranking_replay.py --model-dir models/cooc
    python benchmarks/ranking_replay.py --events 6000 --rounds 5 --lists-out /tmp/lists.jsonl

Writes ``benchmarks/results/ranking-replay-<stamp>.{md,json}``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine, missing_model, write_report  # noqa: E402


@dataclass(frozen=True)
class Batch:
    states: list[Any]
    triggers: list[str]
    now_ms: int
    stats: Any


def replay_batches(n_events: int, batch: int, history: int = 50) -> list[Batch]:
    """The first ``n_events`` ML-100K events in time order as the worker's batches."""
    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.engine.serving.item_stats import ItemStatsCounter
    from streamrec.engine.types import Interaction, UserState

    events = load_movielens_100k().events.sort_values("ts", kind="stable").head(n_events)
    rows = events.to_dict("records")
    histories: dict[str, list[Interaction]] = {}
    seen: dict[str, set[str]] = {}
    bought: dict[str, set[str]] = {}
    counter = ItemStatsCounter()
    out = []
    for start in range(0, len(rows), batch):
        states, triggers = [], []
        for n, row in enumerate(rows[start : start + batch]):
            user, item, kind = str(row["user_id"]), str(row["item_id"]), str(row["type"])
            ts = int(row["ts"]) * 1000
            mine = histories.setdefault(user, [])
            counter.add(item, kind, ts, mine[-counter.window :])
            mine.append(Interaction(item, kind, ts))  # type: ignore[arg-type]
            del mine[:-history]
            seen.setdefault(user, set()).add(item)
            if kind == "purchase":
                bought.setdefault(user, set()).add(item)
            states.append(
                UserState(user, tuple(mine), frozenset(bought.get(user, ())), frozenset(seen[user]))
            )
            triggers.append(f"e{start + n}")
        now = max(i.ts for s in states for i in s.history[-1:])
        stats = counter.stats([i.item_id for s in states for i in s.history], now)
        out.append(Batch(states, triggers, now, stats))
    return out


def run(model_dir: Path, n_events: int, batch: int, rounds: int) -> dict[str, Any]:
    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.engine.serving.catalog import Catalog, catalog_items
    from streamrec.engine.serving.model import ItemModel
    from streamrec.engine.serving.recommender import RankingParams, Recommender
    from streamrec.index.device import set_cpu_threads
    from streamrec.index.faiss_index import FaissItemIndex
    from streamrec.stream.contracts import encode_recommendation

    set_cpu_threads(1)
    model = ItemModel.load(model_dir)
    rec = Recommender(model, FaissItemIndex.load(model_dir / "index"), Catalog(), RankingParams())
    for item in catalog_items(load_movielens_100k().catalog):
        rec.apply_item(item)
    batches = replay_batches(n_events, batch)
    cpu_us: list[float] = []
    digests: set[str] = set()
    lists: list[bytes] = []
    for _ in range(rounds):
        digest, lists = hashlib.sha256(), []
        started = time.process_time()
        for b in batches:
            for ranked in rec.recommend(b.states, b.triggers, b.now_ms, b.stats):
                lists.append(encode_recommendation(ranked.recommendation))
        cpu_us.append(1e6 * (time.process_time() - started) / n_events)
        for encoded in lists:
            digest.update(encoded)
        digests.add(digest.hexdigest())
    if len(digests) != 1:
        msg = f"the lists changed from one round to the next: {sorted(digests)}"
        raise RuntimeError(msg)
    return {
        "events": n_events,
        "batch": batch,
        "rounds": rounds,
        "model_version": model.version,
        "cpu_us_per_event_min": min(cpu_us),
        "cpu_us_per_event_median": statistics.median(cpu_us),
        "cpu_us_per_event": cpu_us,
        "lists_sha256": digests.pop(),
        "lists": lists,
    }


def commit() -> str:
    """The checkout's commit (``+changes`` when the tree differs from it), or ``unknown``."""
    try:
        head = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
            )
            .stdout.decode()
            .strip()
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, check=False)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty.returncode else "")


def to_markdown(result: dict[str, Any]) -> str:
    return (
        f"# Ranking CPU on a fixed replay, {result['stamp']}\n\n"
        f"Command: `{result['command']}`  \n"
        f"Machine: {result['machine']}  \n"
        f"Commit: {result['commit']}  \n"
        f"Model: `{result['model_dir']}`, version {result['model_version']}, 1 FAISS thread\n\n"
        "| events | batch | rounds | CPU us/event (min) | CPU us/event (median) | lists SHA-256 |\n"
        "|---:|---:|---:|---:|---:|---|\n"
        f"| {result['events']:,} | {result['batch']} | {result['rounds']} | "
        f"{result['cpu_us_per_event_min']:,.0f} | {result['cpu_us_per_event_median']:,.0f} | "
        f"`{result['lists_sha256'][:16]}` |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "current")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lists-out", type=Path, help="write every encoded list here")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if (problem := missing_model(args.model_dir)) is not None:
        print(problem, file=sys.stderr)
        return 1
    if args.events < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--events, --batch and --rounds must be at least 1")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    found = run(args.model_dir.resolve(), args.events, args.batch, args.rounds)
    lists = found.pop("lists")
    if args.lists_out is not None:
        args.lists_out.write_bytes(b"\n".join(lists) + b"\n")
    result = {
        "stamp": stamp,
        "command": " ".join(["python", "benchmarks/ranking_replay.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "commit": commit(),
        "model_dir": str(args.model_dir),
        **found,
    }
    write_report(args.out_dir, f"ranking-replay-{stamp}", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
