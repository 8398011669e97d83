"""``streamrec demo``: everything on one machine, started and stopped by one command.

Starts a local KRaft broker and redis-server (deploy/local), trains a first model on
MovieLens-100K if none exists, creates the topics, runs one worker process, publishes
the catalog, replays the interaction log at a human pace and shows recommendations with
their reasons live. Ctrl-C (or --events N) stops everything it started.

Kafka listens on 127.0.0.1:9092 and Redis on 127.0.0.1:6379, the settings' defaults,
when those ports are free (else on free random ports; ``KAFKA_PORT`` / ``REDIS_PORT`` in
the environment choose others). Either way the demo starts by printing the
``export STREAMREC_...`` lines that point ``streamrec api``, ``streamrec explain USER``
and ``streamrec watch`` in another terminal at it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from streamrec.engine.serving.catalog import catalog_items
from streamrec.stream.cli.local_infra import (
    STANDARD_KAFKA_PORT,
    STANDARD_REDIS_PORT,
    LocalInfraError,
    LocalService,
    port_is_free,
    preferred_port,
    start_kafka,
    start_redis,
)
from streamrec.stream.cli.replay import publish_catalog, publish_events, wait_for_catalog
from streamrec.stream.cli.watch import Trigger, watch
from streamrec.stream.kafka_io import ensure_topics
from streamrec.stream.settings import Settings
from streamrec.stream.worker.service import model_exists

#: The demo's first model trains the encoder for at most this many epochs (minutes, not tens).
DEMO_SEQUENCE_EPOCHS = 4


def run_demo(args: argparse.Namespace) -> int:
    from streamrec.engine.offline.datasets import load_movielens_100k

    console = Console()
    state = Path(args.state_dir).resolve()
    model_dir = Path(args.model_dir).resolve()
    services: list[LocalService] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        with console.status("starting Kafka (KRaft, from Maven Central on first run)..."):
            services.append(
                _start_preferring(start_kafka, state / "kafka", "KAFKA_PORT", STANDARD_KAFKA_PORT)
            )
        console.print(f"[green]Kafka[/] on {services[-1].address}{_moved('Kafka', services[-1])}")
        with console.status("starting redis-server..."):
            services.append(
                _start_preferring(start_redis, state / "redis", "REDIS_PORT", STANDARD_REDIS_PORT)
            )
        console.print(
            f"[green]Redis[/] on {services[-1].address.split('@')[-1]}"
            f"{_moved('Redis', services[-1])}"
        )
        console.print(
            "\nto talk to this demo from another terminal (`streamrec api`, "
            "`streamrec explain USER`, `streamrec watch`), paste there:",
            markup=False,
            soft_wrap=True,
        )
        for line in export_lines(services[0].address, services[1].address, model_dir):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        console.print()
        env = {
            **os.environ,
            "STREAMREC_KAFKA_BOOTSTRAP": services[0].address,
            "STREAMREC_REDIS_URL": services[1].address,
            "STREAMREC_MODEL_DIR": str(model_dir),
            "STREAMREC_METRICS_PORT": str(args.metrics_port),
        }
        if not model_exists(model_dir):
            console.print(
                "no model yet: training one on MovieLens-100K (the sequential encoder for at "
                f"most {DEMO_SEQUENCE_EPOCHS} epochs, to keep the first start short; "
                "`streamrec train` trains it for up to 3 minutes, "
                "`--sequence-minutes 0` until early stopping)"
            )
            cli = [sys.executable, "-m", "streamrec"]
            subprocess.run(  # noqa: S603 - our own CLI
                [
                    *cli,
                    "train",
                    "--dataset",
                    "ml-100k",
                    "--out",
                    str(model_dir),
                    "--sequence-epochs",
                    str(DEMO_SEQUENCE_EPOCHS),
                ],
                env=env,
                check=True,
            )
            subprocess.run(  # noqa: S603 - our own CLI
                [*cli, "index", "build", "--model-dir", str(model_dir)],
                env=env,
                check=True,
            )
        settings = Settings(
            kafka_bootstrap=services[0].address,
            redis_url=services[1].address,
            model_dir=model_dir,
            metrics_port=args.metrics_port,
        )
        asyncio.run(ensure_topics(settings))
        log_path = state / "worker.log"
        with log_path.open("ab") as log_file:
            worker = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "streamrec", "worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        console.print(
            f"[green]worker[/] pid {worker.pid}, log {log_path}, "
            f"metrics http://127.0.0.1:{args.metrics_port}/metrics"
        )
        data = load_movielens_100k()
        events = data.events if args.events is None else data.events.iloc[: args.events]
        asyncio.run(_live(settings, data.catalog, events, args.rate, worker, console))
    except KeyboardInterrupt:
        console.print("\nstopping...")
    finally:
        if worker is not None:
            _stop(worker)
        for service in reversed(services):
            service.stop()
        console.print("stopped everything the demo started")
    return 0


def export_lines(kafka_bootstrap: str, redis_url: str, model_dir: Path) -> list[str]:
    """The shell lines that point the CLI at a running demo (values shell-quoted)."""
    return [
        f"export STREAMREC_KAFKA_BOOTSTRAP={shlex.quote(kafka_bootstrap)}",
        f"export STREAMREC_REDIS_URL={shlex.quote(redis_url)}",
        f"export STREAMREC_MODEL_DIR={shlex.quote(str(model_dir))}",
    ]


def _moved(name: str, service: LocalService) -> str:
    """A note when a service is not on its standard port (taken, or chosen otherwise)."""
    standard = STANDARD_KAFKA_PORT if name == "Kafka" else STANDARD_REDIS_PORT
    address = service.address if "://" in service.address else f"//{service.address}"
    if urlsplit(address).port == standard:
        return ""
    return f" (not {standard}: the settings' default does not reach it, use the exports below)"


def _start_preferring(
    start: Callable[[Path, dict[str, str] | None], LocalService],
    state_dir: Path,
    variable: str,
    standard: int,
    environ: Mapping[str, str] = os.environ,
    is_free: Callable[[int], bool] = port_is_free,
) -> LocalService:
    """Start a service on :func:`preferred_port`; should the standard port be taken
    between the check and the start, start it again on a free random port."""
    port = preferred_port(variable, standard, environ, is_free)
    if port is None or environ.get(variable, "").strip():
        return start(state_dir, None)
    try:
        return start(state_dir, {variable: port})
    except LocalInfraError:
        return start(state_dir, {variable: ""})


async def _live(settings, catalog, events, rate, worker, console) -> None:  # type: ignore[no-untyped-def]
    items = catalog_items(catalog)
    await publish_catalog(settings, items)
    with console.status("waiting for the worker to take in the catalog..."):
        await wait_for_catalog(settings, {i.item_id for i in items})
    console.print(
        f"published {len(items):,} catalog items; replaying {len(events):,} events at {rate:g}/s"
    )
    sent = {"n": 0}

    def status() -> str:
        alive = (
            "worker running" if worker.poll() is None else f"worker EXITED ({worker.returncode})"
        )
        return f"{sent['n']:,}/{len(events):,} events sent · {alive}"

    def bump(k: int) -> None:
        sent["n"] += k

    producer_task = asyncio.create_task(publish_events(settings, events, rate=rate, progress=bump))
    # The lists name their trigger by event id: the replayed events give its item and type.
    triggers = {
        str(e): Trigger(str(i), str(t))
        for e, i, t in zip(events["event_id"], events["item_id"], events["type"], strict=True)
    }
    await watch(
        settings,
        {i.item_id: i.title for i in items},
        stop_after=len(events),
        status=status,
        console=console,
        triggers=triggers,
    )
    await producer_task


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
