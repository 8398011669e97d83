"""Replay a log through one real worker on a fresh local broker; collect what it publishes.

:func:`local_stack` starts Kafka (KRaft) and redis-server through deploy/local's scripts,
creates the topics and runs one ``streamrec worker`` process with the given settings; it
stops all three on exit, whatever happened. :func:`replay_and_collect` publishes a catalog,
waits until the worker took it in, produces events in the given order (keyed by user, so
each user's events stay in order) and keeps the list published for each chosen trigger
event. Used by :mod:`streamrec.stream.cli.replay_eval`.

Errors::

    ReplayError                      root: the replay could not run to the end
    └── WorkerExitedError            the worker process ended early (its log is quoted)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pandas as pd

from streamrec.engine.offline.training import Progress
from streamrec.engine.types import Item
from streamrec.stream.cli.local_infra import LocalInfraError, LocalService, start_kafka, start_redis
from streamrec.stream.cli.replay import publish_catalog, publish_events, wait_for_catalog
from streamrec.stream.kafka_io import consumer, ensure_topics
from streamrec.stream.settings import Settings

__all__ = [
    "Collected",
    "LocalStack",
    "ReplayError",
    "WorkerExitedError",
    "local_stack",
    "replay_and_collect",
]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


class ReplayError(RuntimeError):
    """The replay could not run to the end."""


class WorkerExitedError(ReplayError):
    """The worker process ended before the replay did."""


class _RecItem(msgspec.Struct):
    item_id: str


class _Rec(msgspec.Struct):  # the fields of a recommendation message read here
    trigger_event_id: str
    items: list[_RecItem]


_decode_rec = msgspec.json.Decoder(_Rec).decode


@dataclass(frozen=True)
class LocalStack:
    """A running broker, Redis and worker: the settings that reach them, and the worker."""

    settings: Settings
    worker: subprocess.Popen[bytes]
    log_path: Path

    def check_worker(self) -> None:
        """Raise :class:`WorkerExitedError` (with the log's tail) if the worker ended."""
        if self.worker.poll() is None:
            return
        tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        msg = f"the worker exited with status {self.worker.returncode} during the replay:\n{tail}"
        raise WorkerExitedError(msg)


@dataclass(frozen=True)
class Collected:
    """What a replay got back.

    Attributes:
        lists: Published item ids by the key of the trigger event in ``wanted``.
        received: Recommendation messages consumed.
        dead: Dead letters consumed.
        seconds: From the first event sent to the last message consumed.
    """

    lists: Mapping[str, list[str]]
    received: int
    dead: int
    seconds: float


def _worker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without its STREAMREC_* variables, plus ``settings`` as those."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env |= {f"STREAMREC_{k.upper()}": v for k, v in settings.items()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def local_stack(root: Path, worker_settings: Mapping[str, str]) -> Iterator[LocalStack]:
    """Fresh Kafka and Redis under ``root``, the topics, and one worker; all stopped on exit.

    Args:
        root: Folder for the broker's and Redis's state and ``worker.log``.
        worker_settings: Settings by field name (``model_dir`` at least); the broker and
            Redis addresses are added. Nothing else of the caller's STREAMREC_* environment
            reaches the worker.

    Yields:
        The running stack.

    Raises:
        streamrec.stream.cli.local_infra.LocalInfraError: Kafka or Redis did not start.
    """
    services: list[LocalService] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        services.append(start_kafka(root / "kafka"))
        services.append(start_redis(root / "redis"))
        chosen = {
            **worker_settings,
            "kafka_bootstrap": services[0].address,
            "redis_url": services[1].address,
        }
        settings = Settings(**chosen)  # type: ignore[arg-type]
        asyncio.run(ensure_topics(settings))
        log_path = root / "worker.log"
        with log_path.open("ab") as log_file:
            worker = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "streamrec", "worker"],
                cwd=ROOT,
                env=_worker_env(chosen),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield LocalStack(settings, worker, log_path)
    finally:
        if worker is not None:
            _stop(worker)
        for service in reversed(services):
            try:
                service.stop()
            except LocalInfraError as exc:  # stop the others anyway
                log.warning("could not stop %s: %s", service.script, exc)


async def replay_and_collect(
    stack: LocalStack,
    items: list[Item],
    events: pd.DataFrame,
    wanted: Mapping[str, str],
    *,
    rate: float | None = None,
    progress: Progress | None = None,
    idle_timeout_s: float = 120.0,
) -> Collected:
    """Publish the catalog, produce ``events`` and keep the lists of the ``wanted`` triggers.

    Waits until every event is answered (a list or a dead letter) and every wanted list has
    arrived, or until nothing arrived for ``idle_timeout_s`` after the last event was sent.

    Args:
        stack: The running broker, Redis and worker.
        items: The catalog to publish first.
        events: Events (event schema), sent in this order with their logged ``ts``.
        wanted: ``{trigger event id: key}``: whose published list to keep, under which key.
        rate: Events per second (None: as fast as possible).
        progress: Called as ``progress(stage, done, total)``.
        idle_timeout_s: How long to wait without any message before giving up.

    Returns:
        The kept lists and the counts.

    Raises:
        WorkerExitedError: The worker ended early.
    """
    settings = stack.settings
    await publish_catalog(settings, items)
    waiting = asyncio.create_task(wait_for_catalog(settings, {i.item_id for i in items}))
    while not waiting.done():
        try:
            stack.check_worker()
        except WorkerExitedError:
            waiting.cancel()
            raise
        await asyncio.wait({waiting}, timeout=0.5)
    waiting.result()
    total = len(events)
    sent = 0

    def bump(k: int) -> None:
        nonlocal sent
        sent += k
        if progress is not None and (sent % 1000 == 0 or sent == total):
            progress("replay: events sent", sent, total)

    lists: dict[str, list[str]] = {}
    received = dead = 0
    topics = [settings.topic_recommendations, settings.topic_dlq]
    async with consumer(settings, topics, from_beginning=True) as cons:
        started = time.perf_counter()
        producing = asyncio.create_task(
            publish_events(settings, events, rate=rate, live_ts=False, progress=bump)
        )
        last_record = time.perf_counter()
        try:
            while len(lists) < len(wanted) or received + dead < total:
                stack.check_worker()
                if producing.done() and producing.exception() is not None:
                    await producing  # raises the producer's error
                batch = await cons.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        if tp.topic == settings.topic_dlq:
                            dead += 1
                            continue
                        received += 1
                        rec = _decode_rec(record.value or b"")
                        key = wanted.get(rec.trigger_event_id)
                        if key is not None:
                            lists[key] = [i.item_id for i in rec.items]
                if batch:
                    last_record = time.perf_counter()
                    if progress is not None:
                        progress("replay: lists received", received, total)
                elif producing.done() and time.perf_counter() - last_record > idle_timeout_s:
                    break  # nothing more is coming
            await producing
        finally:
            if not producing.done():
                producing.cancel()
    return Collected(lists, received, dead, last_record - started)
