"""End-to-end benchmark on the local broker: events/s and event-to-recommendation latency.

Starts its own Kafka (KRaft) and redis-server through deploy/local and publishes the
catalog. Then, for each worker configuration in turn (``batched``: micro-batches; ``naive``:
one event at a time, so per-event Redis round-trips and index searches), it runs one
`streamrec worker` process on its own topics and, for each phase, produces the same events
(MovieLens-100K users and items, ts = send time) and consumes the recommendations,
measuring latency from the event's ts to the moment the recommendation is consumed. The
gain of batching is the ratio of the two rows, measured side by side.

    python benchmarks/e2e.py                     # both configurations, unthrottled + 500 ev/s
    python benchmarks/e2e.py --events 50000 --rates max,1000 --configs batched
    python benchmarks/e2e.py --catalog-size 100000 --configs batched

``--catalog-size`` grows the catalog to that many items with synthetic ones (titles,
genres and tags drawn from the MovieLens catalog's words): a copy of the model directory
gets the grown catalog and ``streamrec index build`` indexes the new items from their
text (the tuner picks the index for the size), and every item is published to the worker.

The ``latest`` configuration is ``batched`` with ``STREAMREC_PUBLISH=latest_per_user``: one
list per user per micro-batch. A list answers its trigger event and the user's earlier
events (it was ranked on a state that holds them), so an event's latency runs to the first
list of its user that answers it; ``lists/event`` says how many lists were published.

The ``floor`` configuration is the transport floor (benchmarks/floor.py): a Faust worker
configured like ours that only decodes each event and publishes a fixed list of
``--floor-list-bytes``. Every phase reports the worker's CPU per event (utime + stime of
the worker process and its children, from /proc, over the phase) and, with ``floor`` in
the run, each configuration's CPU per event as a multiple of the floor's at the same rate:

    python benchmarks/e2e.py --configs floor,batched --events 20000 --rates max,1000

Needs a trained ML-100K model (make demo trains one, or `streamrec train --dataset ml-100k`
then `streamrec index build`). Writes benchmarks/results/e2e-<timestamp>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine  # noqa: E402
from streamrec.engine.offline.datasets import load_movielens_100k  # noqa: E402
from streamrec.engine.serving.catalog import catalog_items  # noqa: E402
from streamrec.engine.serving.model import ItemModel  # noqa: E402
from streamrec.engine.types import Item  # noqa: E402
from streamrec.stream.cli.local_infra import start_kafka, start_redis  # noqa: E402
from streamrec.stream.cli.replay import wait_for_catalog  # noqa: E402
from streamrec.stream.contracts import encode_item  # noqa: E402
from streamrec.stream.kafka_io import ensure_topics  # noqa: E402
from streamrec.stream.settings import Settings  # noqa: E402


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, state, first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_stats(pid: int) -> tuple[float, int]:
    """(cpu seconds, rss bytes) of a process: CPU of the process and its children (see
    :func:`tree_cpu`), resident memory of the process."""
    rss = int(_stat(pid)[21]) * os.sysconf("SC_PAGE_SIZE")
    return tree_cpu(pid), rss


def tree_cpu(pid: int) -> float:
    """CPU seconds (utime + stime) of a process, its live descendants and the children it
    has waited for (cutime + cstime), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    ticks = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            stat = _stat(current)
        except OSError:
            continue
        ticks += sum(int(v) for v in stat[11:15])  # utime, stime, cutime, cstime
        todo += parents.get(current, [])
    return ticks / os.sysconf("SC_CLK_TCK")


async def send_views(
    producer: AIOKafkaProducer,
    topic: str,
    events: Sequence[tuple[str, str, str]],
    rate: float | None,
    *,
    sent_ts: dict[str, int] | None = None,
    before: Callable[[int], Awaitable[None]] | None = None,
) -> float:
    """Produce ``events`` (event_id, user, item) as views at ``rate`` per second (None or
    0: as fast as possible), each stamped ``ts`` = its send time (recorded in ``sent_ts``),
    keyed by user; ``before(n)`` runs before the n-th. Returns when all are flushed, with
    the ``time.perf_counter()`` at which sending began."""
    t0 = time.perf_counter()
    for n, (event_id, user, item) in enumerate(events):
        if before is not None:
            await before(n)
        if rate:
            delay = t0 + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        ts = time.time_ns() // 1_000_000
        if sent_ts is not None:
            sent_ts[event_id] = ts
        body = json.dumps(
            {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "ts": ts}
        ).encode()
        await producer.send(topic, body, key=user.encode())
    await producer.flush()
    return t0


async def phase(
    settings: Settings, events: list[tuple[str, str, str]], rate: float | None, worker_pid: int
) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        settings.topic_recommendations,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()  # reads from the start; only this phase's trigger ids count
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2, acks=1)
    await producer.start()
    sent_ts: dict[str, int] = {}
    latencies: list[float] = []
    list_bytes: list[int] = []
    done = asyncio.Event()
    # Each user's events not yet answered, in send order. A list answers its trigger and
    # the user's earlier events (it was ranked on a state that holds them): with
    # STREAMREC_PUBLISH=latest_per_user one list answers all of a user's events in a batch.
    user_of = {event_id: user for event_id, user, _ in events}
    waiting: dict[str, list[str]] = {}
    for event_id, user, _ in events:
        waiting.setdefault(user, []).append(event_id)

    async def consume() -> None:
        while len(latencies) < len(events):
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time_ns() / 1e6
            for records in batch.values():
                for r in records:
                    trigger = json.loads(r.value)["trigger_event_id"]
                    if trigger not in sent_ts:
                        continue  # another phase's list, or an event answered already
                    queue = waiting[user_of[trigger]]
                    answered = queue.index(trigger) + 1
                    latencies.extend(now - sent_ts.pop(e) for e in queue[:answered])
                    del queue[:answered]
                    list_bytes.append(len(r.value))
        done.set()

    cpu0, _ = proc_stats(worker_pid)
    busy0, ticks0 = machine_ticks()
    reader = asyncio.create_task(consume())
    t0 = await send_views(producer, settings.topic_events, events, rate, sent_ts=sent_ts)
    send_s = time.perf_counter() - t0
    await asyncio.wait_for(done.wait(), timeout=600)
    total_s = time.perf_counter() - t0
    cpu1, rss = proc_stats(worker_pid)
    busy1, ticks1 = machine_ticks()
    await producer.stop()
    await consumer.stop()
    reader.cancel()
    lat = np.array(latencies)
    return {
        "target_rate": rate or 0.0,
        "events": len(events),
        "send_seconds": round(send_s, 3),
        "seconds": round(total_s, 3),
        "events_per_s": round(len(events) / total_s, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "worker_cpu_percent": round(100 * (cpu1 - cpu0) / total_s, 1),
        # Worker CPU (process and children) over the phase, per event produced.
        "cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / len(events), 1),
        "list_bytes": round(float(np.mean(list_bytes)), 1),
        "lists_per_event": round(len(list_bytes) / len(events), 3),
        "worker_rss_mb": round(rss / 2**20, 1),
        # Broker, Redis and this load generator share the machine with the worker.
        "machine_busy_percent": round(100 * (busy1 - busy0) / max(ticks1 - ticks0, 1), 1),
    }


def grow_catalog(
    model_dir: Path, catalog: pd.DataFrame, size: int, state: Path
) -> tuple[Path, pd.DataFrame]:
    """A copy of ``model_dir`` whose catalog has ``size`` items (the extra ones synthetic)
    and whose index, built by ``streamrec index build``, holds all of them."""
    rng = np.random.default_rng(0)
    words = sorted({w for t in catalog["title"] for w in str(t).split() if w.isalpha()})
    genres = sorted(set(catalog["category"]))
    extra = size - len(catalog)
    rows = []
    for n in range(extra):
        genre = genres[int(rng.integers(len(genres)))]
        title = " ".join(words[int(i)] for i in rng.integers(len(words), size=3))
        rows.append(
            {
                "item_id": f"syn-{n}",
                "title": f"{title} {n}",
                "category": genre,
                "tags": [genre, words[int(rng.integers(len(words)))]],
                "price": float(rng.uniform(5, 50)),
                "description": f"{title}, a {genre.lower()} title",
                "available": True,
            }
        )
    grown = pd.concat([catalog, pd.DataFrame(rows)], ignore_index=True)
    out = state / "model"
    out.mkdir()
    for name in ("model.json", "model.npz"):
        shutil.copy(model_dir / name, out / name)
    grown.to_parquet(out / "catalog.parquet")
    subprocess.run(
        [sys.executable, "-m", "streamrec", "index", "build", "--model-dir", str(out)],
        cwd=ROOT,
        check=True,
    )
    return out, grown


async def publish_catalog(settings: Settings, items: list[Item]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await prod.start()
    for item in items:
        await prod.send(settings.topic_items, encode_item(item), key=item.item_id.encode())
    await prod.stop()


#: Worker settings of each configuration compared in one run.
CONFIGS: dict[str, dict[str, str]] = {
    # Micro-batches: one Redis script call, one index search and one pipelined write per batch.
    "batched": {},
    # One event at a time: per-event Redis round-trips, one search per event.
    "naive": {"STREAMREC_BATCH_SIZE": "1", "STREAMREC_BATCH_WITHIN_MS": "1"},
    # Micro-batches publishing one list per user per batch (the freshest), not per event.
    "latest": {"STREAMREC_PUBLISH": "latest_per_user"},
    # The transport floor: Faust configured like ours, decode + a fixed list (floor.py).
    "floor": {},
}
#: The configurations that are not `streamrec worker` (they take no catalog either).
FLOOR = "floor"


def worker_command(name: str, floor_list_bytes: int) -> list[str]:
    """The command that runs configuration ``name``."""
    if name == FLOOR:
        # Run from the repository root (run_config's cwd).
        return [sys.executable, "benchmarks/floor.py", "--list-bytes", str(floor_list_bytes)]
    return [sys.executable, "-m", "streamrec", "worker"]


def run_config(
    name: str,
    base: Settings,
    env: dict[str, str],
    state: Path,
    log: list[dict[str, object]],
    items: list[Item],
    rates: list[str],
    n_events: int,
    idle: dict[str, float],
    idle_s: float,
    floor_list_bytes: int = 2500,
) -> list[dict[str, object]]:
    """Start a worker with this configuration on its own topics, publish the catalog to
    it (not to the floor), warm it up, measure its CPU while no event comes (``idle_s``,
    into ``idle``), run the phases, stop it."""
    settings = base.model_copy(
        update={
            "app_id": f"streamrec-bench-{name}",
            "topic_events": f"bench-{name}.events",
            "topic_items": f"bench-{name}.items",
            "topic_recommendations": f"bench-{name}.recommendations",
            "topic_dlq": f"bench-{name}.dlq",
        }
    )
    asyncio.run(ensure_topics(settings))
    worker_env = {
        **env,
        "STREAMREC_APP_ID": settings.app_id,
        "STREAMREC_TOPIC_EVENTS": settings.topic_events,
        "STREAMREC_TOPIC_ITEMS": settings.topic_items,
        "STREAMREC_TOPIC_RECOMMENDATIONS": settings.topic_recommendations,
        "STREAMREC_TOPIC_DLQ": settings.topic_dlq,
        **CONFIGS[name],
    }
    with (state / f"worker-{name}.log").open("wb") as worker_log:
        worker = subprocess.Popen(
            worker_command(name, floor_list_bytes),
            cwd=ROOT,
            env=worker_env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            if name != FLOOR:
                asyncio.run(publish_catalog(settings, items))
                # A worker takes in roughly 1,000 items/s (new ones are encoded from text).
                wait = max(120.0, len(items) / 500)
                asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}, timeout_s=wait))
            # Warm-up: wait until the worker answers (group joined, catalog loaded).
            warm = [
                (f"{name}-warm-{n}", str(log[n]["user_id"]), str(log[n]["item_id"]))
                for n in range(200)
            ]
            asyncio.run(phase(settings, warm, 200.0, worker.pid))
            if idle_s > 0:
                time.sleep(2.0)  # the warm-up's last batches and commits
                cpu0, _ = proc_stats(worker.pid)
                time.sleep(idle_s)
                idle[name] = round(100 * (proc_stats(worker.pid)[0] - cpu0) / idle_s, 1)
            rng = np.random.default_rng(0)  # the same events for every configuration
            results = []
            for rate_s in rates:
                rate = None if rate_s == "max" else float(rate_s)
                picks = rng.integers(len(log), size=n_events)
                events = [
                    (f"{name}-{rate_s}-{n}", str(log[i]["user_id"]), str(log[i]["item_id"]))
                    for n, i in enumerate(picks)
                ]
                result = {"config": name, **asyncio.run(phase(settings, events, rate, worker.pid))}
                print(json.dumps(result), flush=True)
                results.append(result)
            return results
        finally:
            worker.terminate()
            worker.wait(30)


def model_parts(model: ItemModel) -> list[str]:
    """What the worker computes per event with this model (each part has its cost)."""
    parts = [f"co-occurrence vectors (d={model.dim})"]
    if model.adaptation.enabled:
        parts.append("per-user adaptation")
    if model.encoder is not None:
        parts.append("sequential encoder")
    parts.append("second-stage ranker" if model.ranker is not None else "no second-stage ranker")
    return parts


def plot(results: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(str(r["config"]) for r in results))
    rates = list(dict.fromkeys(float(r["target_rate"]) for r in results))  # type: ignore[arg-type]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(len(configs), 1)
    for c, config in enumerate(configs):
        rows = [r for r in results if r["config"] == config]
        xs = [rates.index(float(r["target_rate"])) + c * width for r in rows]  # type: ignore[arg-type]
        axes[0].bar(xs, [float(r["events_per_s"]) for r in rows], width, label=config)  # type: ignore[arg-type]
        axes[1].bar(xs, [float(r["p99_ms"]) for r in rows], width, label=config)  # type: ignore[arg-type]
    labels = ["unthrottled" if not r else f"{r:g}/s" for r in rates]
    for ax, ylabel in zip(axes, ("events/s", "p99 event-to-consumed ms (log)"), strict=True):
        ax.set_xticks([i + width * (len(configs) - 1) / 2 for i in range(len(rates))], labels)
        ax.set_ylabel(ylabel)
        ax.legend()
    axes[1].set_yscale("log")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def floor_ratios(results: list[dict[str, object]]) -> list[str]:
    """Lines giving each configuration's worker CPU per event and events/s as multiples of
    the floor's in the phase of the same target rate (none without a floor)."""
    floors = {r["target_rate"]: r for r in results if r["config"] == FLOOR}
    lines = []
    for r in results:
        base = floors.get(r["target_rate"])
        if base is None or r["config"] == FLOOR:
            continue
        target = "unthrottled" if not r["target_rate"] else f"{r['target_rate']:g}/s"
        cpu, floor_cpu = float(r["cpu_us_per_event"]), float(base["cpu_us_per_event"])  # type: ignore[arg-type]
        rate, floor_rate = float(r["events_per_s"]), float(base["events_per_s"])  # type: ignore[arg-type]
        r["cpu_vs_floor"] = round(cpu / floor_cpu, 2)
        lines.append(
            f"\n{target}: {r['config']} / floor worker CPU per event = "
            f"{cpu / floor_cpu:.2f}x ({cpu:g} vs {floor_cpu:g} us/event); "
            f"events/s {rate:g} vs {floor_rate:g} ({rate / floor_rate:.2f}x)"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="events per phase")
    parser.add_argument(
        "--rates", default="max,500", help="comma list of ev/s; 'max' = unthrottled"
    )
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "current"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--batch-within-ms",
        type=int,
        default=None,
        help="the batched worker's STREAMREC_BATCH_WITHIN_MS (default: the setting's)",
    )
    parser.add_argument(
        "--catalog-size",
        type=int,
        default=0,
        help="grow the catalog to this many items with synthetic ones, indexed from text",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="measure each worker's CPU this long with no events, after the warm-up (0: skip)",
    )
    parser.add_argument(
        "--configs",
        default="batched,naive",
        help="worker configurations to run side by side: batched (micro-batches of "
        "--batch-size), naive (one event at a time), latest (batched, one list per user per "
        "batch: STREAMREC_PUBLISH=latest_per_user), floor (the transport floor: a Faust "
        "worker configured like ours that only decodes and publishes a fixed list)",
    )
    parser.add_argument(
        "--floor-list-bytes",
        type=int,
        default=2500,
        help="the size of the floor's fixed list (JSON bytes)",
    )
    args = parser.parse_args()
    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "index" / "items.ids.json").is_file():
        print(f"no model+index in {model_dir}: run `make demo` once or streamrec train/index build")
        return 2
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
        return 2

    # SIGTERM (a timeout, a CI kill) unwinds like Ctrl-C: the worker, broker and Redis stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = load_movielens_100k()
    log = cast(list[dict[str, object]], data.events.to_dict("records"))
    state = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    catalog = data.catalog
    if args.catalog_size > len(catalog):
        model_dir, catalog = grow_catalog(model_dir, catalog, args.catalog_size, state)
    kafka = start_kafka(state / "kafka")
    redis = start_redis(state / "redis")
    results: list[dict[str, object]] = []
    idle: dict[str, float] = {}
    try:
        settings = Settings(
            kafka_bootstrap=kafka.address,
            redis_url=redis.address,
            model_dir=model_dir,
            metrics_port=0,
            batch_size=args.batch_size,
        )
        env = {
            **os.environ,
            "STREAMREC_KAFKA_BOOTSTRAP": kafka.address,
            "STREAMREC_REDIS_URL": redis.address,
            "STREAMREC_MODEL_DIR": str(model_dir),
            "STREAMREC_METRICS_PORT": "0",
            "STREAMREC_BATCH_SIZE": str(args.batch_size),
            "STREAMREC_LOG_LEVEL": "WARNING",
        }
        if args.batch_within_ms is not None:
            env["STREAMREC_BATCH_WITHIN_MS"] = str(args.batch_within_ms)

        items = catalog_items(catalog)
        for name in configs:
            results += run_config(
                name,
                settings,
                env,
                state,
                log,
                items,
                args.rates.split(","),
                args.events,
                idle,
                args.idle_seconds,
                args.floor_list_bytes,
            )
    finally:
        kafka.stop()
        redis.stop()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ratios = floor_ratios(results)  # also puts each phase's cpu_vs_floor into results
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    index_info = json.loads((model_dir / "index" / "items.ids.json").read_text())
    model = ItemModel.load(model_dir)
    parts = model_parts(model)
    report = {
        "machine": machine(),
        "model_dir": str(Path(args.model_dir).resolve()),
        "model_version": model.version,
        "model_parts": parts,
        "catalog_items": len(catalog),
        "index": index_info.get("factory"),
        "batch_size": args.batch_size,
        "batch_within_ms": int(env.get("STREAMREC_BATCH_WITHIN_MS", Settings().batch_within_ms)),
        "configs": {c: CONFIGS[c] for c in configs},
        "commands": {c: worker_command(c, args.floor_list_bytes)[1:] for c in configs},
        "command": " ".join(["python", *sys.argv]),
        "floor_list_bytes": args.floor_list_bytes if FLOOR in configs else None,
        "phases": results,
        "idle_cpu_percent": idle,
        "at": stamp,
    }
    (out / f"e2e-{stamp}.json").write_text(json.dumps(report, indent=2))
    floor_note = (
        f", floor = the transport floor (benchmarks/floor.py: Faust configured like ours, "
        f"decode + a fixed {args.floor_list_bytes}-byte list)"
        if FLOOR in configs
        else ""
    )
    lines = [
        f"End-to-end on the local broker ({report['machine']}), batched = micro-batches of "
        f"{args.batch_size} within {report['batch_within_ms']} ms, naive = one event at a time"
        f"{floor_note}; the same events for every configuration; "
        f"{len(catalog):,} catalog items, {report['index']} index",
        "",
        f"Model {model.version}: {', '.join(parts)}",
        "",
        f"Command: `{report['command']}`",
        "",
        "| config | target rate | events | events/s | p50 ms | p95 ms | p99 ms | worker CPU % "
        "| worker CPU us/event | lists/event | list bytes | worker RSS MB | machine busy % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        target = "max" if not r["target_rate"] else f"{r['target_rate']:g}/s"
        lines.append(
            f"| {r['config']} | {target} | {r['events']} | {r['events_per_s']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['worker_cpu_percent']} | "
            f"{r['cpu_us_per_event']} | {r['lists_per_event']} | {r['list_bytes']} | "
            f"{r['worker_rss_mb']} | {r['machine_busy_percent']} |"
        )
    lines += ratios
    by = {(r["config"], r["target_rate"]): r for r in results}
    for r in results:
        naive = by.get(("naive", r["target_rate"]))
        if r["config"] == "batched" and naive is not None:
            target = "unthrottled" if not r["target_rate"] else f"{r['target_rate']:g}/s"
            lines.append(
                f"\n{target}: batched / naive events/s = "
                f"{float(r['events_per_s']) / float(naive['events_per_s']):.2f}x, "  # type: ignore[arg-type]
                f"p99 {r['p99_ms']} vs {naive['p99_ms']} ms"
            )
    for name, percent in idle.items():
        lines.append(
            f"\n{name}, idle (no events for {args.idle_seconds:g} s): worker CPU {percent}%"
        )
    (out / f"e2e-{stamp}.md").write_text("\n".join(lines) + "\n")
    plot(results, out / f"e2e-{stamp}.png", f"streamrec end to end, {report['machine']}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
