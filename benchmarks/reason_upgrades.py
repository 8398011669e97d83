"""Asynchronous reason upgrades against a live worker: how many top items get a model
sentence, how soon, whether every sentence passes the guard, and whether the worker notices.

Starts its own Kafka (KRaft) and redis-server through deploy/local, one `streamrec worker`
(template reasons) and publishes the catalog. Then, on that one worker:

1. ``without``: ``--events`` MovieLens-100K events at ``--rate`` events/s, no writer;
2. ``with-<lang>`` for each of ``--languages``: `streamrec reasons upgrade` started as a
   process of its own (the local model unless STREAMREC_REASON_LM_URL is set: SmolLM2-135M
   on the CPU), waited for until it follows the lists, given ``--join-seconds`` to join its
   group, then the same number of events at the same rate; afterwards up to
   ``--late-seconds`` more for late updates; the writer is stopped after the phase;
   with ``--rounds N`` each language runs N such phases (``with-<lang>``,
   ``with-<lang>-2``, ...), the writer restarted for each: the first starts with no
   stored sentence frames, the later ones load what the earlier ones stored in Redis;
3. ``without-after`` (unless ``--no-after``): no writer again, to tell drift from the
   writer's effect.

Both topics are then read from the beginning with a plain consumer. For each with-writer
phase: the share of the published lists' top-N items (matched by recommendation_id and
item_id) whose model-written reason was published within 5 s and 30 s of the list
(``upgraded_at - generated_at``) and at all, also for the second half of the phase (a
warmer cache); the upgrade latency over upgraded items; every update sentence re-checked
by an independent :class:`~streamrec.engine.reasons.guard.Guard` (catalog titles and
categories) against that item's evidence in the list, its code and the list's user; the
writer's own /metrics counters (deltas over the phase). For every phase: the worker's CPU
per event (utime + stime of the worker process tree from /proc) and the event-to-list
latency (list consumed minus event ts, and the list's generated_at minus event ts).

    python benchmarks/reason_upgrades.py                        # English, 1,200 events at 20/s
    python benchmarks/reason_upgrades.py --languages en,zh --batch 16

Writes benchmarks/results/reason-upgrades-<timestamp>.{json,md}.
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
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import machine_ticks, publish_catalog, send_views, tree_cpu  # noqa: E402
from benchmarks.machine import machine, missing_model, write_report  # noqa: E402
from benchmarks.scale_out import free_port, group_members  # noqa: E402
from streamrec.engine.offline.datasets import load_movielens_100k  # noqa: E402
from streamrec.engine.reasons._types import Language  # noqa: E402
from streamrec.engine.reasons.guard import Guard  # noqa: E402
from streamrec.engine.reasons.templates import TemplateGenerator  # noqa: E402
from streamrec.engine.serving.catalog import catalog_items  # noqa: E402
from streamrec.engine.types import Recommendation  # noqa: E402
from streamrec.stream.cli.local_infra import start_kafka, start_redis  # noqa: E402
from streamrec.stream.cli.replay import wait_for_catalog  # noqa: E402
from streamrec.stream.contracts import recommendation_from_json  # noqa: E402
from streamrec.stream.kafka_io import ensure_topics  # noqa: E402
from streamrec.stream.settings import Settings  # noqa: E402

Event = tuple[str, str, str]  # event id, user, item
SCHEMA = json.loads((ROOT / "stream" / "schemas" / "reason_update.schema.json").read_text())
METRICS = (
    "streamrec_reason_upgrades_total",
    "streamrec_reason_guard_rejections_total",
    "streamrec_reason_model_calls_total",
    "streamrec_reason_upgrade_seconds_bucket",
    "streamrec_reason_upgrade_seconds_count",
    "streamrec_reason_upgrade_queue",
)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# -- processes ---------------------------------------------------------------------------


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A subprocess in its own session (a kill of its group reaches its children)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM its process group, SIGKILL it after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def scrape(port: int) -> dict[str, float]:
    """The writer's /metrics samples we report, keyed by ``name{labels}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:  # noqa: S310
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def writer_group_stable(settings: Settings) -> bool:
    """Whether the writer's consumer group (``<app_id>-reason-writer``) is Stable with one
    member."""
    group = settings.model_copy(update={"app_id": f"{settings.app_id}-reason-writer"})
    try:
        return asyncio.run(group_members(group)) == ("Stable", 1)
    except (KafkaError, IndexError):
        return False


def wait_writer(
    proc: subprocess.Popen[bytes], log: Path, port: int, settings: Settings, timeout_s: float
) -> tuple[float, str]:
    """Seconds until the writer follows the lists (its log says "reason writer: following",
    or, since `streamrec reasons upgrade` may log at WARNING only, its consumer group is
    Stable) and its /metrics answers; and which of the two signals was seen."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            msg = f"the reason writer exited ({proc.returncode}):\n{log.read_text()[-4000:]}"
            raise RuntimeError(msg)
        try:
            scrape(port)
        except OSError:
            time.sleep(0.5)
            continue
        if "reason writer: following" in log.read_text(errors="replace"):
            return time.monotonic() - t0, "log line"
        if writer_group_stable(settings):
            return time.monotonic() - t0, "consumer group Stable (no log line)"
        time.sleep(0.5)
    msg = f"the reason writer did not follow within {timeout_s:g} s:\n{log.read_text()[-4000:]}"
    raise TimeoutError(msg)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in after.items()}


def by_label(samples: dict[str, float], name: str, label: str) -> dict[str, float]:
    """``{label value: sample}`` of one labelled metric."""
    out = {}
    for key, value in samples.items():
        if key.startswith(name + "{"):
            out[key.split(f'{label}="', 1)[1].split('"', 1)[0]] = value
    return out


# -- Kafka -------------------------------------------------------------------------------


async def produce_phase(
    settings: Settings, events: list[Event], rate: float, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Produce ``events`` at ``rate``/s (ts = send time) and consume the lists until every
    event has one: the send ts and the consumed time (epoch ms) per event id."""
    consumer = AIOKafkaConsumer(
        settings.topic_recommendations,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()  # from the start: only this phase's trigger ids count
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2, acks=1)
    await producer.start()
    ids = {e[0] for e in events}
    sent: dict[str, int] = {}
    consumed: dict[str, float] = {}
    all_in = asyncio.Event()

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time_ns() / 1e6
            for records in batch.values():
                for r in records:
                    trigger = json.loads(r.value)["trigger_event_id"]
                    if trigger in ids and trigger not in consumed:
                        consumed[trigger] = now
            if len(consumed) == len(ids):
                all_in.set()

    reader = asyncio.create_task(consume())
    try:
        t0 = await send_views(producer, settings.topic_events, events, rate, sent_ts=sent)
        send_s = time.perf_counter() - t0
        try:
            await asyncio.wait_for(all_in.wait(), timeout=timeout_s)
        except TimeoutError:
            print(f"  only {len(consumed)} of {len(ids)} lists after {timeout_s:g} s", flush=True)
        total_s = time.perf_counter() - t0
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    return {"sent": sent, "consumed": consumed, "send_s": send_s, "total_s": total_s}


async def read_topic(settings: Settings, topic: str) -> list[bytes]:
    """Every message value of ``topic``, from the beginning to its end when called."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = {tp: n for tp, n in (await consumer.end_offsets(tps)).items() if n > 0}
        last: dict[TopicPartition, int] = {}
        values: list[bytes] = []
        deadline = time.monotonic() + 120
        while any(last.get(tp, -1) + 1 < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                print(f"  {topic}: stopped reading after 120 s", flush=True)
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    last[tp] = r.offset
                    if r.value is not None:
                        values.append(r.value)
        return values
    finally:
        await consumer.stop()


# -- phases ------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every phase of the run shares."""

    settings: Settings
    env: dict[str, str]
    state: Path
    log: list[dict[str, object]]
    args: argparse.Namespace
    worker: subprocess.Popen[bytes] | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def events(self, tag: str, n: int) -> list[Event]:
        picks = self.rng.integers(len(self.log), size=n)
        return [
            (f"{tag}-{k}", str(self.log[i]["user_id"]), str(self.log[i]["item_id"]))
            for k, i in enumerate(picks)
        ]

    def run_phase(
        self, name: str, writer: subprocess.Popen[bytes] | None = None
    ) -> tuple[dict[str, Any], list[Event]]:
        assert self.worker is not None
        events = self.events(name, self.args.events)
        load0 = loadavg()
        cpu0 = tree_cpu(self.worker.pid)
        wcpu0 = tree_cpu(writer.pid) if writer else 0.0
        busy0, ticks0 = machine_ticks()
        out = asyncio.run(produce_phase(self.settings, events, self.args.rate))
        cpu = tree_cpu(self.worker.pid) - cpu0
        wcpu = tree_cpu(writer.pid) - wcpu0 if writer else None
        busy1, ticks1 = machine_ticks()
        lat = np.array([out["consumed"][e] - out["sent"][e] for e in out["consumed"]])
        row: dict[str, Any] = {
            "phase": name,
            "writer": writer is not None,
            "events": len(events),
            "target_rate": self.args.rate,
            "lists_consumed": len(out["consumed"]),
            "send_seconds": round(out["send_s"], 2),
            "seconds": round(out["total_s"], 2),
            "worker_cpu_us_per_event": round(1e6 * cpu / len(events), 1),
            "worker_cpu_percent": round(100 * cpu / out["total_s"], 1),
            "writer_cpu_percent": round(100 * wcpu / out["total_s"], 1) if writer else None,
            "machine_busy_percent": round(100 * (busy1 - busy0) / max(ticks1 - ticks0, 1), 1),
            "consumed_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "consumed_p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
            "consumed_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "loadavg_start": load0,
            "loadavg_end": loadavg(),
            "_sent": out["sent"],
        }
        return row, events

    def start_writer(
        self, language: str, name: str
    ) -> tuple[subprocess.Popen[bytes], int, float, str]:
        port = free_port()
        env = {
            **self.env,
            "STREAMREC_REASON_WRITER_METRICS_PORT": str(port),
            "STREAMREC_REASON_LANGUAGE": language,
            "STREAMREC_REASON_UPGRADE_BATCH": str(self.args.batch),
            "STREAMREC_LOG_LEVEL": "INFO",
        }
        log = self.state / f"writer-{name}.log"
        proc = start_process([sys.executable, "-m", "streamrec", "reasons", "upgrade"], env, log)
        try:
            ready_s, signal_seen = wait_writer(
                proc, log, port, self.settings, self.args.writer_timeout
            )
        except BaseException:
            stop_process(proc)
            raise
        return proc, port, ready_s, signal_seen

    def wait_late(self, port: int, last_sent_ms: int) -> float:
        """Wait for late updates: until the writer is idle (empty queue, counters still for
        3 s) or ``--late-seconds`` after the last event; the seconds waited."""
        t0 = time.monotonic()
        deadline = last_sent_ms / 1000 + self.args.late_seconds
        previous: dict[str, float] = {}
        still = 0
        while time.time() < deadline:
            time.sleep(1.0)
            now = scrape(port)
            counters = {k: v for k, v in now.items() if "upgrades_total" in k}
            queue = now.get("streamrec_reason_upgrade_queue", 0.0)
            still = still + 1 if counters == previous and queue == 0 else 0
            previous = counters
            if still >= 3:
                break
        return round(time.monotonic() - t0, 1)


def writer_phase_stats(
    lists: list[Recommendation],
    updates: list[dict[str, Any]],
    events: list[Event],
    guard: Guard,
    top_n: int,
    language: Language = "en",
) -> dict[str, Any]:
    """Upgrade shares, latency, the independent guard re-check of one phase, and how many
    upgraded sentences equal one of the item's template phrasings (a model that copies)."""
    templates = TemplateGenerator(language)
    order = {e[0]: n for n, e in enumerate(events)}
    half = len(events) // 2
    by_rec: dict[str, Recommendation] = {}
    for rec in lists:
        if rec.trigger_event_id in order:
            by_rec.setdefault(rec.recommendation_id, rec)
    upgraded: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    schema_errors = 0
    unmatched = 0
    try:
        import jsonschema

        validator: Any = jsonschema.Draft202012Validator(SCHEMA)
    except ImportError:  # optional: only a check of the contract
        validator = None
    for update in updates:
        rec_id = update["recommendation_id"]
        if rec_id not in by_rec:
            unmatched += 1
            continue
        if validator is not None and not validator.is_valid(update):
            schema_errors += 1
        for item in update["items"]:
            key = (rec_id, item["item_id"])
            if key not in upgraded or update["upgraded_at"] < upgraded[key][0]:
                upgraded[key] = (int(update["upgraded_at"]), item)
    delays: list[float] = []
    half_delays: list[float | None] = []
    all_delays: list[float | None] = []
    guard_failures: list[dict[str, Any]] = []
    checked = passed = copies = 0
    per_code: Counter[str] = Counter()
    per_code_up: Counter[str] = Counter()
    for rec_id, rec in by_rec.items():
        second_half = order[rec.trigger_event_id] >= half
        for item in rec.items[:top_n]:
            per_code[item.reason_code] += 1
            hit = upgraded.get((rec_id, item.item_id))
            d = None if hit is None else float(hit[0] - rec.generated_at)
            all_delays.append(d)
            if second_half:
                half_delays.append(d)
            if hit is None:
                continue
            delays.append(cast(float, d))
            per_code_up[item.reason_code] += 1
            text = str(hit[1]["reason"])
            phrasings = templates.phrasings(item.reason_code, item.evidence)
            copies += any(text in tier for tier in phrasings)
            result = guard.check(text, item.evidence, code=item.reason_code, user_id=rec.user_id)
            checked += 1
            if result.ok and hit[1]["reason_code"] == item.reason_code:
                passed += 1
            elif len(guard_failures) < 20:
                guard_failures.append(
                    {"reason": text, "code": item.reason_code, "violations": result.violations}
                )

    def shares(ds: list[float | None]) -> dict[str, float | int | None]:
        n = len(ds)
        got = [d for d in ds if d is not None]
        return {
            "top_items": n,
            "within_5s": round(sum(d <= 5000 for d in got) / n, 4) if n else None,
            "within_30s": round(sum(d <= 30000 for d in got) / n, 4) if n else None,
            "ever": round(len(got) / n, 4) if n else None,
        }

    lat = np.array(delays)
    return {
        "lists": len(by_rec),
        "all": shares(all_delays),
        "second_half": shares(half_delays),
        "upgraded_items": len(delays),
        "upgrade_p50_ms": round(float(np.percentile(lat, 50)), 0) if len(lat) else None,
        "upgrade_p95_ms": round(float(np.percentile(lat, 95)), 0) if len(lat) else None,
        "upgrade_max_ms": round(float(lat.max()), 0) if len(lat) else None,
        "updates": len(updates) - unmatched,
        "updates_not_matching_a_list": unmatched,
        "updates_schema_invalid": schema_errors if validator is not None else None,
        "guard_checked": checked,
        "guard_passed": passed,
        "guard_pass_share": round(passed / checked, 4) if checked else None,
        "guard_failures": guard_failures,
        "template_copies": copies,
        "top_items_by_code": dict(per_code),
        "upgraded_by_code": dict(per_code_up),
    }


def list_latencies(lists: list[Recommendation], sent: dict[str, int]) -> dict[str, Any]:
    """generated_at minus event ts over a phase's lists (first list per event)."""
    seen: dict[str, float] = {}
    for rec in lists:
        if rec.trigger_event_id in sent and rec.trigger_event_id not in seen:
            seen[rec.trigger_event_id] = rec.generated_at - sent[rec.trigger_event_id]
    lat = np.array(list(seen.values()))
    if not len(lat):
        return {}
    return {
        "generated_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "generated_p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def writer_counters(d: dict[str, float]) -> dict[str, Any]:
    outcomes = by_label(d, "streamrec_reason_upgrades_total", "outcome")
    rules = by_label(d, "streamrec_reason_guard_rejections_total", "rule")
    buckets = by_label(d, "streamrec_reason_upgrade_seconds_bucket", "le")
    count = d.get("streamrec_reason_upgrade_seconds_count", 0.0)
    fresh = outcomes.get("upgraded", 0) + outcomes.get("cached", 0)
    judged = fresh + outcomes.get("rejected", 0)
    return {
        "upgrades_by_outcome": {k: int(v) for k, v in outcomes.items()},
        "guard_rejections_by_rule": {k: int(v) for k, v in rules.items()},
        "model_calls": int(d.get("streamrec_reason_model_calls_total", 0)),
        "guard_pass_rate_upgraded_cached_over_judged": round(fresh / judged, 4) if judged else None,
        "updates_within_5s_histogram": round(buckets.get("5.0", 0) / count, 4) if count else None,
        "updates_observed": int(count),
    }


def problems(state: Path) -> list[str]:
    """Lines of the worker and writer logs that say ERROR, CRITICAL, Traceback or
    Exception (first 30)."""
    found = []
    for path in sorted(state.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(w in line for w in ("ERROR", "CRITICAL", "Traceback", "Exception")):
                found.append(f"{path.name}: {line.strip()[:240]}")
    return found[:30]


def markdown(report: dict[str, Any]) -> str:
    a = report["args"]
    lines = [
        f"Reason upgrades against a live worker on the local broker ({report['machine']}); "
        f"load average {report['loadavg_start']} at the start, {report['loadavg_end']} at "
        f"the end. One `streamrec worker` (template reasons, model {report['model_dir']}, "
        f"{report['catalog_items']:,} items); each phase {a['events']} ML-100K events at "
        f"{a['rate']:g}/s; the writer (`streamrec reasons upgrade`, {report['backend']}, "
        f"batch {a['batch']}, top {report['top_n']}, sentence frames "
        f"{'on' if report.get('frames', True) else 'off'}) runs only in the `with-*` "
        f"phases, started before the phase (the first of a language with no stored frames, "
        f"`-2`, `-3` with those the earlier writers stored), stopped after it.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| phase | writer | worker CPU us/event | worker CPU % | writer CPU % | machine busy % "
        "| event-to-list p50 / p99 ms (consumed) | p99 ms (generated_at) | top-3 items "
        "| model reason <= 5 s | <= 30 s | ever | 2nd half <= 5 s / <= 30 s / ever "
        "| upgrade p50 / p95 ms | guard re-check | equal to a template phrasing |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for r in report["phases"]:
        u = r.get("upgrades")
        cells = ["-"] * 8
        if u:
            s, h = u["all"], u["second_half"]
            guard = (
                f"{u['guard_passed']}/{u['guard_checked']} ({pct(u['guard_pass_share'])})"
                if u["guard_checked"]
                else "no sentences"
            )
            cells = [
                str(s["top_items"]),
                pct(s["within_5s"]),
                pct(s["within_30s"]),
                pct(s["ever"]),
                f"{pct(h['within_5s'])} / {pct(h['within_30s'])} / {pct(h['ever'])}",
                f"{u['upgrade_p50_ms']} / {u['upgrade_p95_ms']}",
                guard,
                f"{u.get('template_copies', 0)}/{u['guard_checked']}",
            ]
        lines.append(
            f"| {r['phase']} | {'yes' if r['writer'] else 'no'} | {r['worker_cpu_us_per_event']} "
            f"| {r['worker_cpu_percent']} | {r['writer_cpu_percent'] or '-'} "
            f"| {r['machine_busy_percent']} | {r['consumed_p50_ms']} / {r['consumed_p99_ms']} "
            f"| {r.get('generated_p99_ms', '-')} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Model reason <= 5 s / <= 30 s: share of the phase's published top-3 items whose "
        "update (matched by recommendation_id and item_id) has upgraded_at - the list's "
        "generated_at within that time; ever: by the end of the phase plus the late wait. "
        "2nd half: the lists of the phase's second half of events (warmer cache). Guard "
        "re-check: update sentences that pass an independent Guard(catalog titles, "
        "categories).check(text, the item's evidence in the list, code, user). Equal to a "
        "template phrasing: update sentences that are word for word one of the item's "
        "template sentences in the writer's language (the model copied its example).",
    ]
    for r in report["phases"]:
        w = r.get("writer_metrics")
        if not w:
            continue
        lines += [
            "",
            f"Writer /metrics over `{r['phase']}` (deltas; ready {r['writer_ready_s']} s after "
            f"start by {r['writer_ready_by']}, late wait {r['late_wait_s']} s): upgrades by "
            f"outcome {w['upgrades_by_outcome']}; guard rejections by rule "
            f"{w['guard_rejections_by_rule']}; model calls {w['model_calls']}; raw guard pass "
            f"rate (upgraded+cached)/(upgraded+cached+rejected) "
            f"{pct(w['guard_pass_rate_upgraded_cached_over_judged'])}; histogram le=5 s "
            f"share of updates {pct(w['updates_within_5s_histogram'])}.",
        ]
        u = r["upgrades"]
        lines.append(
            f"Updates {u['updates']} (not matching a phase list: "
            f"{u['updates_not_matching_a_list']}, schema-invalid: "
            f"{u['updates_schema_invalid']}); top items by code {u['top_items_by_code']}, "
            f"upgraded by code {u['upgraded_by_code']}."
        )
    if report["log_problems"]:
        lines += ["", "Log lines with ERROR/CRITICAL/Traceback/Exception:"]
        lines += [f"- `{p}`" for p in report["log_problems"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1200, help="events per phase")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s in every phase")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cooc")
    parser.add_argument("--languages", default="en", help="comma list: one writer phase each")
    parser.add_argument("--batch", type=int, default=8, help="STREAMREC_REASON_UPGRADE_BATCH")
    parser.add_argument("--join-seconds", type=float, default=10.0)
    parser.add_argument("--late-seconds", type=float, default=30.0)
    parser.add_argument("--writer-timeout", type=float, default=300.0)
    parser.add_argument("--no-after", action="store_true", help="skip the without-after phase")
    parser.add_argument(
        "--rounds", type=int, default=2, help="writer phases per language (restarted each time)"
    )
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()
    problem = missing_model(args.model_dir)
    if problem:
        print(problem)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = loadavg()
    data = load_movielens_100k()
    log = cast(list[dict[str, object]], data.events.to_dict("records"))
    items = catalog_items(data.catalog)
    guard = Guard([i.title for i in items], [i.category for i in items])
    state = Path(tempfile.mkdtemp(prefix="streamrec-reason-upgrades-"))
    kafka = start_kafka(state / "kafka")
    redis = None
    writer: subprocess.Popen[bytes] | None = None
    phases: list[dict[str, Any]] = []
    phase_events: dict[str, list[Event]] = {}
    bench: Bench | None = None
    # The writer's environment holds no STREAMREC_ variable of ours: the default.
    top_n = int(Settings.model_fields["reason_upgrade_top_n"].default)
    try:
        redis = start_redis(state / "redis")
        settings = Settings(
            kafka_bootstrap=kafka.address,
            redis_url=redis.address,
            model_dir=args.model_dir,
            metrics_port=0,
            app_id="reasonbench",
            topic_events="reasonbench.events",
            topic_items="reasonbench.items",
            topic_recommendations="reasonbench.recommendations",
            topic_dlq="reasonbench.dlq",
            topic_control="reasonbench.control",
            topic_reason_updates="reasonbench.reason-updates",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env |= {
            "STREAMREC_KAFKA_BOOTSTRAP": kafka.address,
            "STREAMREC_REDIS_URL": redis.address,
            "STREAMREC_MODEL_DIR": str(args.model_dir),
            "STREAMREC_METRICS_PORT": "0",
            "STREAMREC_LOG_LEVEL": "WARNING",
            "STREAMREC_REASON_GENERATOR": "template",
            "STREAMREC_APP_ID": settings.app_id,
            "STREAMREC_TOPIC_EVENTS": settings.topic_events,
            "STREAMREC_TOPIC_ITEMS": settings.topic_items,
            "STREAMREC_TOPIC_RECOMMENDATIONS": settings.topic_recommendations,
            "STREAMREC_TOPIC_DLQ": settings.topic_dlq,
            "STREAMREC_TOPIC_CONTROL": settings.topic_control,
            "STREAMREC_TOPIC_REASON_UPDATES": settings.topic_reason_updates,
        }
        for name in (
            "STREAMREC_REASON_LM_URL",
            "STREAMREC_REASON_LM_MODEL",
            "STREAMREC_REASON_UPGRADE_FRAMES",
        ):
            if name in os.environ:
                env[name] = os.environ[name]
        asyncio.run(ensure_topics(settings))
        (state / "tmp").mkdir()
        bench = Bench(settings, env, state, log, args)
        bench.worker = start_process(
            [sys.executable, "-m", "streamrec", "worker"],
            {**env, "TMPDIR": str(state / "tmp")},
            state / "worker.log",
        )
        asyncio.run(publish_catalog(settings, items))
        asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}, 180.0))
        warm = [(f"warm-{n}", str(log[n]["user_id"]), str(log[n]["item_id"])) for n in range(200)]
        asyncio.run(produce_phase(settings, warm, 100.0))
        print("worker warm", flush=True)

        row, phase_events["without"] = bench.run_phase("without")
        phases.append(row)
        print({k: v for k, v in row.items() if k != "_sent"}, flush=True)
        runs = [
            (language, f"with-{language}" + (f"-{n}" if n > 1 else ""))
            for language in args.languages.split(",")
            if language
            for n in range(1, args.rounds + 1)
        ]
        for language, name in runs:
            writer, port, ready_s, ready_by = bench.start_writer(language, name)
            print(f"writer {name} ready after {ready_s:.1f} s ({ready_by})", flush=True)
            time.sleep(args.join_seconds)
            before = scrape(port)
            row, phase_events[name] = bench.run_phase(name, writer)
            row["late_wait_s"] = bench.wait_late(port, max(row["_sent"].values()))
            row["writer_ready_s"] = round(ready_s, 1)
            row["writer_ready_by"] = ready_by
            row["writer_metrics"] = writer_counters(delta(scrape(port), before))
            row["writer_metrics_raw"] = delta(scrape(port), before)
            row["language"] = language
            stop_process(writer)
            writer = None
            phases.append(row)
            print({k: v for k, v in row.items() if k != "_sent"}, flush=True)
        if not args.no_after:
            row, phase_events["without-after"] = bench.run_phase("without-after")
            phases.append(row)
            print({k: v for k, v in row.items() if k != "_sent"}, flush=True)

        lists = [
            recommendation_from_json(v)
            for v in asyncio.run(read_topic(settings, settings.topic_recommendations))
        ]
        updates = [
            json.loads(v) for v in asyncio.run(read_topic(settings, settings.topic_reason_updates))
        ]
        print(f"read {len(lists)} lists, {len(updates)} updates", flush=True)
        for row in phases:
            row.update(list_latencies(lists, row["_sent"]))
            if row["writer"]:
                row["upgrades"] = writer_phase_stats(
                    lists, updates, phase_events[row["phase"]], guard, top_n, row["language"]
                )
    finally:
        stop_process(writer)
        if bench is not None:
            stop_process(bench.worker)
        if redis is not None:
            redis.stop()
        kafka.stop()
    for row in phases:
        row.pop("_sent", None)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "machine": machine(),
        "cores": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "command": " ".join(["python", *sys.argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model_dir": str(args.model_dir),
        "catalog_items": len(items),
        "backend": (
            f"server {os.environ['STREAMREC_REASON_LM_URL']}"
            if os.environ.get("STREAMREC_REASON_LM_URL")
            else "local SmolLM2-135M-Instruct (CPU)"
        ),
        "top_n": top_n,
        "frames": os.environ.get("STREAMREC_REASON_UPGRADE_FRAMES", "true").lower()
        not in ("0", "false", "no", "off"),
        "phases": phases,
        "log_problems": problems(state),
        "state_dir": str(state),
        "at": stamp,
    }
    write_report(
        ROOT / "benchmarks" / "results", f"reason-upgrades-{stamp}", report, markdown(report)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
