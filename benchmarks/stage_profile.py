"""Where the time goes per event: the worker's pipeline, stage by stage.

Starts its own redis-server (deploy/local), builds the worker's pipeline
(``streamrec.stream.worker.service.build_pipeline``: the store, model, index and ranking code a
worker runs,
without Kafka), and feeds it MovieLens-100K events in time order in micro-batches of each
``--batch-sizes``. Every stage is wrapped with a timer:

* decode: parse and validate the event JSON (``streamrec.stream.contracts.decode_event``);
* state: apply the events to Redis (history, dedupe, item statistics: one script call);
* item stats: read trending and co-occurrence for the batch;
* embed: the users' query vectors (co-occurrence part, adaptation, sequential encoder);
* search: the FAISS search for the batch;
* candidates: each user's candidates from every source (ANN hits, co-occurrence
  partners, trending, fresh) with their scores;
* features: the learned ranker's features of the whole batch and its scores;
* filters: exclusions, availability, same titles, near duplicates, diversity;
* reasons: citations, evidence, reason codes, the popular fill and the sentences;
* rank (rest): the rest of ``Recommender.recommend`` (histories, exclusions, glue);
* save: write the lists and user vectors to Redis;
* encode: the recommendation messages to JSON.

Publishing to Kafka is not in this harness: ``benchmarks/e2e.py`` measures the whole path
through a broker. Each stage is reported in wall ms per event with its share of the
total, and in CPU us per event of the thread that ran it (``time.thread_time``: for the
Redis stages the client's own work, not the wait for the server).

    python benchmarks/stage_profile.py --model-dir models/current
    python benchmarks/stage_profile.py --events 5000 --batch-sizes 1,16,64

Writes ``benchmarks/results/stage-profile-<stamp>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine, missing_model, write_report  # noqa: E402

STAGES = (
    "decode",
    "state",
    "item stats",
    "embed",
    "search",
    "candidates",
    "features",
    "filters",
    "reasons",
    "rank (rest)",
    "save",
    "encode",
)
#: The stages inside ``Recommender.recommend``; its rest is "rank (rest)".
IN_RANKING = ("embed", "search", "candidates", "features", "filters", "reasons")


class Timers:
    """Wall and CPU (of the calling thread) seconds spent in each stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def clear(self) -> None:
        self.seconds.clear()
        self.cpu.clear()

    def wrap_sync(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
                self.cpu[stage] += time.thread_time() - cpu

        return timed

    def wrap_async(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
                self.cpu[stage] += time.thread_time() - cpu

        return timed


async def _profile(settings: Any, rows: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    import streamrec.stream.worker.pipeline as pipeline_module
    from benchmarks.pipeline_feed import event_messages, ready_pipeline

    pipeline = await ready_pipeline(settings)
    timers = Timers()
    store, rec = pipeline.store, pipeline.recommender
    originals = (pipeline_module.decode_event, pipeline_module.encode_recommendation)
    pipeline_module.decode_event = timers.wrap_sync("decode", originals[0])  # type: ignore[assignment]
    pipeline_module.encode_recommendation = timers.wrap_sync("encode", originals[1])  # type: ignore[assignment]
    store.apply = timers.wrap_async("state", store.apply)  # type: ignore[method-assign]
    store.item_stats = timers.wrap_async("item stats", store.item_stats)  # type: ignore[method-assign]
    store.save_results = timers.wrap_async("save", store.save_results)  # type: ignore[method-assign]
    rec._embed_all = timers.wrap_sync("embed", rec._embed_all)  # type: ignore[method-assign]
    rec.index.search = timers.wrap_sync("search", rec.index.search)  # type: ignore[method-assign]
    rec._candidates = timers.wrap_sync("candidates", rec._candidates)  # type: ignore[method-assign]
    rec._block = timers.wrap_sync("features", rec._block)  # type: ignore[method-assign]
    rec._learned = timers.wrap_sync("features", rec._learned)  # type: ignore[method-assign]
    rec._choose = timers.wrap_sync("filters", rec._choose)  # type: ignore[method-assign]
    rec._explain = timers.wrap_sync("reasons", rec._explain)  # type: ignore[method-assign]
    rec.recommend = timers.wrap_sync("recommend", rec.recommend)  # type: ignore[method-assign]
    try:
        # Warm-up batch (imports, first Redis script load), not counted.
        await pipeline.handle_events(event_messages(rows[:batch], 0))
        timers.clear()
        measured = rows[batch:]
        started = time.perf_counter()
        for start in range(0, len(measured), batch):
            await pipeline.handle_events(
                event_messages(measured[start : start + batch], start + batch)
            )
        wall = time.perf_counter() - started
    finally:
        pipeline_module.decode_event, pipeline_module.encode_recommendation = originals
        await pipeline.close()
        await store.close()
    n = len(measured)
    for clock in (timers.seconds, timers.cpu):
        clock["rank (rest)"] = clock["recommend"] - sum(clock[s] for s in IN_RANKING)
    stages = {s: 1000.0 * timers.seconds.get(s, 0.0) / n for s in STAGES}
    return {
        "batch_size": batch,
        "events": n,
        "wall_ms_per_event": 1000.0 * wall / n,
        "events_per_s": n / wall,
        "stages_ms_per_event": stages,
        "stages_cpu_us_per_event": {s: 1e6 * timers.cpu.get(s, 0.0) / n for s in STAGES},
        "ranking_cpu_us_per_event": 1e6 * timers.cpu["recommend"] / n,
        "other_ms_per_event": 1000.0 * wall / n - sum(stages.values()),
    }


def run(model_dir: Path, n_events: int, batches: list[int]) -> list[dict[str, Any]]:
    from benchmarks.pipeline_feed import bench_settings
    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.stream.cli.local_infra import start_redis

    rows = load_movielens_100k().events.to_dict("records")
    out = []
    for batch in batches:
        state = Path(tempfile.mkdtemp(prefix="streamrec-profile-"))
        server = start_redis(state / "redis")
        try:
            settings = bench_settings(server.address, model_dir, batch_size=batch)
            out.append(asyncio.run(_profile(settings, rows[: n_events + batch], batch)))
        finally:
            server.stop()
    return out


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Where the time goes per event, {result['stamp']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Model: `{result['model_dir']}`, version {result['model_version']}, "
        f"{result['index']} index, {result['faiss_threads']} FAISS thread(s)",
        "",
        "Wall ms per event (share of the wall time) by stage; the pipeline without Kafka.",
        "",
        "| batch | events/s | wall ms/event | "
        + " | ".join(STAGES)
        + " | other (loop, metrics, glue) |",
        "|---:|---:|---:|" + "---:|" * (len(STAGES) + 1),
    ]
    for r in result["runs"]:
        wall = r["wall_ms_per_event"]
        cells = [f"{v:.3f} ({100 * v / wall:.0f}%)" for v in r["stages_ms_per_event"].values()]
        other = r["other_ms_per_event"]
        lines.append(
            f"| {r['batch_size']} | {r['events_per_s']:,.0f} | {wall:.3f} | "
            + " | ".join(cells)
            + f" | {other:.3f} ({100 * other / wall:.0f}%) |"
        )
    lines += [
        "",
        "CPU us per event of the thread that ran each stage (ranking: all of "
        "`Recommender.recommend`).",
        "",
        "| batch | ranking | " + " | ".join(STAGES) + " |",
        "|---:|---:|" + "---:|" * len(STAGES),
    ]
    for r in result["runs"]:
        cpu = r["stages_cpu_us_per_event"]
        lines.append(
            f"| {r['batch_size']} | {r['ranking_cpu_us_per_event']:.0f} | "
            + " | ".join(f"{cpu[s]:.0f}" for s in STAGES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "current")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    from streamrec.engine.serving.model import ItemModel
    from streamrec.index.faiss_index import FaissItemIndex
    from streamrec.stream.settings import Settings

    if (problem := missing_model(args.model_dir)) is not None:
        print(problem, file=sys.stderr)
        return 1
    model_dir = args.model_dir.resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "stamp": stamp,
        "command": " ".join(["python", "benchmarks/stage_profile.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "model_dir": str(args.model_dir),
        "model_version": ItemModel.load(model_dir).version,
        "index": FaissItemIndex.load(model_dir / "index").factory,
        "faiss_threads": Settings().faiss_threads,
        "runs": run(model_dir, args.events, [int(b) for b in args.batch_sizes.split(",")]),
    }
    write_report(args.out_dir, f"stage-profile-{stamp}", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
