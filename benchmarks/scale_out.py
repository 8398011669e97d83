"""Scale-out benchmark: many `streamrec worker` processes on one events topic, measured.

Starts its own Kafka (KRaft) and a Redis Cluster (3 masters + 3 replicas) and/or a single
redis-server through deploy/local, publishes the catalog, and for each worker count in
``--workers`` (in order) runs that many workers in one consumer group on a fresh events
topic of ``--partitions`` partitions, produces ``--events`` MovieLens-100K events as fast
as it can and consumes the lists. Each worker count runs against the Redis state the
previous phase left; one extra phase with the largest worker count runs against a flushed
(empty) Redis. Every phase reports:

* events/s, steady: from the consumed lists, the 10th to 90th percentile of arrivals;
* worker CPU per event: utime + stime of every worker process and its children
  (/proc/PID/stat) over the phase, divided by the events;
* Redis commands per event: ``total_commands_processed`` (INFO stats) summed over the
  master nodes, delta over the phase, divided by the events;
* lists per event: lists consumed whose trigger is one of the phase's events;
* Redis bytes per event: ``used_memory`` summed over the masters, delta per event.

``--rebalance`` adds a phase per Redis: two workers, events produced at
``--rebalance-rate``; a third worker starts a third of the way in and one of the first two
is SIGKILLed two thirds of the way in. It reports lists per event (above 1: lists
published again for events redelivered after the kill) and user-history entries per event
(LLEN of ``sr:{u:USER}:h`` over the phase's users, who are new ones, divided by their
events: 1.0 when every event was applied exactly once).

    python benchmarks/scale_out.py                              # cluster, 1,2,4 workers
    python benchmarks/scale_out.py --redis both --rebalance
    python benchmarks/scale_out.py --events 20000 --workers 1,2,4,8

Writes benchmarks/results/scale-out-<timestamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import publish_catalog, send_views, tree_cpu  # noqa: E402
from benchmarks.machine import machine, missing_model, write_report  # noqa: E402
from streamrec.engine.offline.datasets import load_movielens_100k  # noqa: E402
from streamrec.engine.serving.catalog import catalog_items  # noqa: E402
from streamrec.engine.types import Item  # noqa: E402
from streamrec.stream.cli.local_infra import (  # noqa: E402
    LocalService,
    start_kafka,
    start_redis,
    start_redis_cluster,
)
from streamrec.stream.cli.replay import wait_for_catalog  # noqa: E402
from streamrec.stream.kafka_io import ensure_topics  # noqa: E402
from streamrec.stream.settings import Settings  # noqa: E402
from tests.redis_cluster import flush_masters, masters, node_client, sync_client  # noqa: E402

Event = tuple[str, str, str]  # event id, user, item


@dataclass
class RedisTarget:
    """The Redis a run of phases uses: its kind ("cluster" or "node") and service."""

    kind: str
    service: LocalService

    @property
    def url(self) -> str:
        return self.service.address

    def _masters(self) -> list[redis.Redis]:
        if self.kind == "cluster":
            return [node_client(self.url, port) for port in masters(self.url)]
        return [redis.Redis.from_url(self.url, decode_responses=True)]

    def counters(self) -> tuple[int, int]:
        """(commands processed, used_memory bytes), summed over the master nodes."""
        commands = memory = 0
        for client in self._masters():
            try:
                commands += int(client.info("stats")["total_commands_processed"])
                memory += int(client.info("memory")["used_memory"])
            finally:
                client.close()
        return commands, memory

    def flush(self) -> None:
        if self.kind == "cluster":
            flush_masters(self.url)
            return
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def history_entries(self, users: set[str]) -> int:
        """LLEN of every user's history list, summed."""
        client = sync_client(self.url)
        try:
            pipe = client.pipeline(transaction=False)
            for user in users:
                pipe.llen(f"sr:{{u:{user}}}:h")
            return sum(int(n) for n in pipe.execute())
        finally:
            client.close()


@dataclass
class Workers:
    """The worker processes of one phase (each in its own session, so that a kill reaches
    its children), and the CPU seconds of those that are gone."""

    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gone_cpu: float = 0.0
    base_cpu: dict[int, float] = field(default_factory=dict)

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        tmp = self.logs / f"tmp-{n}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "STREAMREC_METRICS_PORT": str(free_port()),
            # Faust's data folder lies under the temp dir: one per worker.
            "TMPDIR": str(tmp),
        }
        with (self.logs / f"worker-{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamrec", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.base_cpu[proc.pid] = 0.0
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def mark(self) -> None:
        """Start counting CPU from now."""
        self.gone_cpu = 0.0
        self.base_cpu = {p.pid: tree_cpu(p.pid) for p in self.live()}

    def cpu(self) -> float:
        """CPU seconds of every worker since :meth:`mark` (a worker started later: since
        its start)."""
        return self.gone_cpu + sum(
            tree_cpu(p.pid) - self.base_cpu.get(p.pid, 0.0) for p in self.live()
        )

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its children (its CPU so far still counts)."""
        self.gone_cpu += tree_cpu(proc.pid) - self.base_cpu.get(proc.pid, 0.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.live():
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def free_port() -> int:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "local" / "freeport.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


async def group_members(settings: Settings) -> tuple[str, int]:
    """(state, member count) of the worker's consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([settings.app_id]))[0]
        group = response.groups[0]  # error, id, state, protocol type, protocol, members...
        return str(group[2]), len(group[5])
    finally:
        await admin.close()


def wait_group(settings: Settings, members: int, timeout_s: float = 180.0) -> None:
    """Wait until the group is Stable with ``members`` members."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[str, int] = ("", 0)
    while time.monotonic() < deadline:
        try:
            seen = asyncio.run(group_members(settings))
        except KafkaError as exc:  # no coordinator yet (a fresh broker)
            seen = (type(exc).__name__, 0)
        if seen == ("Stable", members):
            return
        time.sleep(1.0)
    msg = f"group {settings.app_id} not Stable with {members} members: {seen}"
    raise TimeoutError(msg)


async def run_events(
    settings: Settings,
    events: list[Event],
    rate: float | None = None,
    at: dict[float, Any] | None = None,
    linger_s: float = 1.0,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Produce ``events`` (unthrottled without ``rate``), consume the lists until every
    event has one and then ``linger_s`` more (late duplicates); ``at`` maps a fraction of
    the events produced to a callable run then (in a thread)."""
    consumer = AIOKafkaConsumer(
        settings.topic_recommendations,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2, acks=1)
    await producer.start()
    ids = {e[0] for e in events}
    lists: Counter[str] = Counter()
    arrivals: list[float] = []
    all_in = asyncio.Event()

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    trigger = json.loads(r.value)["trigger_event_id"]
                    if trigger in ids:
                        if not lists[trigger]:
                            arrivals.append(now)
                        lists[trigger] += 1
            if len(arrivals) == len(ids):
                all_in.set()

    reader = asyncio.create_task(consume())
    todo = sorted((at or {}).items())

    async def changes(n: int) -> None:  # workers added or killed at their share of events
        while todo and n >= todo[0][0] * len(events):
            await asyncio.to_thread(todo.pop(0)[1])

    try:
        t0 = await send_views(producer, settings.topic_events, events, rate, before=changes)
        send_s = time.perf_counter() - t0
        try:
            await asyncio.wait_for(all_in.wait(), timeout=timeout_s)
        except TimeoutError:
            print(f"  only {len(arrivals)} of {len(ids)} lists after {timeout_s:g} s", flush=True)
        total_s = time.perf_counter() - t0
        await asyncio.sleep(linger_s)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    times = np.array(arrivals) - t0
    steady = float("nan")
    if len(times) >= 10:
        lo, hi = np.percentile(times, [10, 90])
        steady = 0.8 * len(times) / max(float(hi - lo), 1e-9)
    return {
        "send_seconds": round(send_s, 3),
        "seconds": round(total_s, 3),
        "events_with_list": len(arrivals),
        "lists": sum(lists.values()),
        "events_per_s": round(len(arrivals) / total_s, 1),
        "steady_events_per_s": round(steady, 1),
    }


def phase_settings(base: Settings, name: str) -> Settings:
    return base.model_copy(
        update={
            "app_id": f"scale-{name}",
            "topic_events": f"scale-{name}.events",
            "topic_recommendations": f"scale-{name}.recommendations",
            "topic_dlq": f"scale-{name}.dlq",
            "topic_control": f"scale-{name}.control",
        }
    )


def phase_env(env: dict[str, str], settings: Settings) -> dict[str, str]:
    return {
        **env,
        "STREAMREC_APP_ID": settings.app_id,
        "STREAMREC_TOPIC_EVENTS": settings.topic_events,
        "STREAMREC_TOPIC_ITEMS": settings.topic_items,
        "STREAMREC_TOPIC_RECOMMENDATIONS": settings.topic_recommendations,
        "STREAMREC_TOPIC_DLQ": settings.topic_dlq,
        "STREAMREC_TOPIC_CONTROL": settings.topic_control,
    }


def dlq_count(settings: Settings) -> int:
    """Messages on the phase's dead-letter topic."""

    async def count() -> int:
        consumer = AIOKafkaConsumer(
            settings.topic_dlq,
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(settings.topic_dlq) or set()
            tps = [TopicPartition(settings.topic_dlq, p) for p in parts]
            ends = await consumer.end_offsets(tps) if tps else {}
            starts = await consumer.beginning_offsets(tps) if tps else {}
            return sum(ends[tp] - starts[tp] for tp in tps)
        finally:
            await consumer.stop()

    return asyncio.run(count())


@dataclass
class Run:
    """What every phase of one Redis shares."""

    base: Settings
    env: dict[str, str]
    target: RedisTarget
    items: list[Item]
    log: list[dict[str, object]]
    n_events: int
    state: Path
    rng: np.random.Generator

    def events(self, tag: str, user_prefix: str = "") -> list[Event]:
        picks = self.rng.integers(len(self.log), size=self.n_events)
        return [
            (f"{tag}-{n}", f"{user_prefix}{self.log[i]['user_id']}", str(self.log[i]["item_id"]))
            for n, i in enumerate(picks)
        ]

    def start_phase(self, name: str, workers: int, extra_env: dict[str, str]) -> Workers:
        """Topics, ``workers`` workers in one group, the catalog taken in, warmed up."""
        settings = phase_settings(self.base, name)
        asyncio.run(ensure_topics(settings))
        group = Workers({**phase_env(self.env, settings), **extra_env}, self.state / name)
        group.logs.mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(workers):
                group.start()
            asyncio.run(wait_for_catalog(settings, {i.item_id for i in self.items}, 180.0))
            wait_group(settings, workers)
            # Warm-up on users of their own (all partitions): group joined, model loaded.
            warm = [
                (f"{name}-warm-{n}", f"warm-{n}", str(self.log[n]["item_id"])) for n in range(200)
            ]
            asyncio.run(run_events(settings, warm, linger_s=0.5, timeout_s=120))
            wait_group(settings, workers)
            time.sleep(1.0)
        except BaseException:
            group.stop()
            raise
        return group

    def phase(self, name: str, workers: int, state: str) -> dict[str, Any]:
        settings = phase_settings(self.base, name)
        group = self.start_phase(name, workers, {})
        try:
            events = self.events(name)
            cmd0, mem0 = self.target.counters()
            group.mark()
            result = asyncio.run(run_events(settings, events))
            cpu = group.cpu()
            cmd1, mem1 = self.target.counters()
            dead = [p.pid for p in group.procs if p.poll() is not None]
        finally:
            group.stop()
        return self.row(name, workers, state, events, result, cpu, cmd1 - cmd0, mem1 - mem0) | {
            "dead_workers": dead,
            "dlq_messages": dlq_count(settings),
        }

    def rebalance(self, name: str, rate: float) -> dict[str, Any]:
        """Two workers; a third joins at 1/3 of the events, one of the first two is
        SIGKILLed at 2/3. Its users are new ones (``rb-USER``), so their history holds
        only this phase's events."""
        settings = phase_settings(self.base, name)
        events = self.events(name, user_prefix=f"{name}-")
        per_user = Counter(e[1] for e in events)
        history = max(1000, 2 * max(per_user.values()))
        extra = {
            "STREAMREC_HISTORY_LENGTH": str(history),
            "STREAMREC_KAFKA_SESSION_TIMEOUT_S": "6",
        }
        group = self.start_phase(name, 2, extra)
        try:
            cmd0, mem0 = self.target.counters()
            group.mark()
            victim = group.procs[0]
            result = asyncio.run(
                run_events(
                    settings,
                    events,
                    rate=rate,
                    at={1 / 3: group.start, 2 / 3: lambda: group.kill(victim)},
                    linger_s=5.0,
                )
            )
            cpu = group.cpu()
            cmd1, mem1 = self.target.counters()
            dead = [p.pid for p in group.procs if p.poll() is not None and p is not victim]
        finally:
            group.stop()
        entries = self.target.history_entries(set(per_user))
        row = self.row(
            name, "2 +1 -1", "warm, rebalance", events, result, cpu, cmd1 - cmd0, mem1 - mem0
        )
        return row | {
            "rate": rate,
            "history_length": history,
            "history_entries_per_event": round(entries / len(events), 4),
            "dead_workers": dead,
            "dlq_messages": dlq_count(settings),
        }

    def row(
        self,
        name: str,
        workers: int | str,
        state: str,
        events: list[Event],
        result: dict[str, Any],
        cpu: float,
        commands: int,
        memory: int,
    ) -> dict[str, Any]:
        n = len(events)
        row = {
            "redis": self.target.kind,
            "phase": name,
            "workers": workers,
            "state": state,
            "events": n,
            **result,
            "worker_cpu_us_per_event": round(1e6 * cpu / n, 1),
            "redis_commands_per_event": round(commands / n, 2),
            "lists_per_event": round(result["lists"] / n, 4),
            "redis_bytes_per_event": round(memory / n, 1),
        }
        print(json.dumps(row), flush=True)
        return row


def run_redis(
    kind: str,
    kafka: LocalService,
    args: argparse.Namespace,
    items: list[Item],
    log: list[dict[str, object]],
    state: Path,
) -> list[dict[str, Any]]:
    service = (start_redis_cluster if kind == "cluster" else start_redis)(state / f"redis-{kind}")
    try:
        target = RedisTarget(kind, service)
        base = Settings(
            kafka_bootstrap=kafka.address,
            redis_url=service.address,
            model_dir=args.model_dir,
            metrics_port=0,
            topic_partitions=args.partitions,
            topic_items=f"scale-{kind}.items",
        )
        env = {
            **os.environ,
            "STREAMREC_KAFKA_BOOTSTRAP": kafka.address,
            "STREAMREC_REDIS_URL": service.address,
            "STREAMREC_MODEL_DIR": str(args.model_dir),
            "STREAMREC_TOPIC_PARTITIONS": str(args.partitions),
            "STREAMREC_LOG_LEVEL": "WARNING",
        }
        asyncio.run(ensure_topics(base))
        asyncio.run(publish_catalog(base, items))
        run = Run(base, env, target, items, log, args.events, state / kind, args.rng)
        counts = [int(w) for w in args.workers.split(",") if w]
        rows = []
        for n in counts:
            print(f"{kind}: {n} worker(s), warm state", flush=True)
            rows.append(run.phase(f"{kind}-w{n}", n, "warm"))
        print(f"{kind}: {max(counts)} worker(s), empty Redis", flush=True)
        target.flush()
        rows.append(run.phase(f"{kind}-w{max(counts)}-empty", max(counts), "empty"))
        if args.rebalance:
            print(f"{kind}: rebalance (2 workers, +1, SIGKILL 1)", flush=True)
            rows.append(run.rebalance(f"{kind}-rb", args.rebalance_rate))
        return rows
    finally:
        service.stop()


def worker_log_problems(state: Path) -> list[str]:
    """Lines of the workers' logs that say ERROR, CRITICAL or Traceback (first few)."""
    found = []
    for path in sorted(state.rglob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(w in line for w in ("ERROR", "CRITICAL", "Traceback")):
                found.append(f"{path.relative_to(state)}: {line.strip()[:200]}")
    return found


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Scale-out on the local broker ({report['machine']}): `streamrec worker` processes in "
        f"one consumer group on an events topic of {report['partitions']} partitions, "
        f"{report['events']} ML-100K events per phase produced unthrottled; each phase runs "
        "on the Redis state the previous one left, `empty` on a flushed Redis.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| redis | workers | state | events/s | worker CPU us/event | Redis cmds/event "
        "| lists/event | Redis bytes/event |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["phases"]:
        lines.append(
            f"| {r['redis']} | {r['workers']} | {r['state']} | {r['steady_events_per_s']} | "
            f"{r['worker_cpu_us_per_event']} | {r['redis_commands_per_event']} | "
            f"{r['lists_per_event']} | {r['redis_bytes_per_event']} |"
        )
    lines += [
        "",
        "events/s: steady rate from the consumed lists (10th to 90th percentile of "
        "arrivals). Worker CPU: utime + stime of all worker processes and their children "
        "over the phase. Redis commands and bytes: deltas of total_commands_processed and "
        "used_memory summed over the master nodes.",
        "",
        f"This machine has {os.cpu_count()} cores shared by Kafka, Redis, the load generator "
        "and the workers: more workers cannot add events/s here, and CPU per event also "
        "counts their contention. Read worker CPU and Redis commands per event across rows: "
        "what one more worker costs per event.",
    ]
    for r in report["phases"]:
        if "history_entries_per_event" in r:
            lines += [
                "",
                f"Rebalance ({r['redis']}): 2 workers at {r['rate']:g} events/s, a third "
                "started a third of the way in, one of the first two SIGKILLed two thirds "
                f"in: lists/event {r['lists_per_event']}, user-history entries/event "
                f"{r['history_entries_per_event']} (history length {r['history_length']}). "
                "Its CPU includes the third worker's start-up.",
            ]
    odd = [
        f"{r['phase']}: {r['dlq_messages']} dead letters, dead workers {r['dead_workers']}"
        for r in report["phases"]
        if r["dlq_messages"] or r["dead_workers"]
    ]
    if odd:
        lines += ["", "Anomalies:", *[f"- {o}" for o in odd]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=6000, help="events per phase")
    parser.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    parser.add_argument("--partitions", type=int, default=8, help="events topic partitions")
    parser.add_argument("--redis", choices=("cluster", "node", "both"), default="cluster")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cooc")
    parser.add_argument(
        "--rebalance", action="store_true", help="add the rebalance phase (see above)"
    )
    parser.add_argument(
        "--rebalance-rate", type=float, default=200.0, help="events/s in the rebalance phase"
    )
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()
    problem = missing_model(args.model_dir)
    if problem:
        print(problem)
        return 2
    args.rng = np.random.default_rng(0)
    # SIGTERM unwinds like Ctrl-C: the workers, the broker and Redis stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = load_movielens_100k()
    log = cast(list[dict[str, object]], data.events.to_dict("records"))
    items = catalog_items(data.catalog)
    state = Path(tempfile.mkdtemp(prefix="streamrec-scale-"))
    kinds = ["cluster", "node"] if args.redis == "both" else [args.redis]
    kafka = start_kafka(state / "kafka")
    rows: list[dict[str, Any]] = []
    try:
        for kind in kinds:
            rows += run_redis(kind, kafka, args, items, log, state)
    finally:
        kafka.stop()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "model_dir": str(args.model_dir),
        "events": args.events,
        "partitions": args.partitions,
        "workers": args.workers,
        "phases": rows,
        "worker_log_problems": worker_log_problems(state),
        "state_dir": str(state),
        "at": stamp,
    }
    write_report(ROOT / "benchmarks" / "results", f"scale-out-{stamp}", report, markdown(report))
    for line in report["worker_log_problems"][:20]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
