"""`streamrec reasons upgrade`: run the reason writer (stream/worker/reason_writer.py).
`streamrec reasons finetune`: fine-tune the local reason model on guard-accepted sentences
(engine/offline/reason_finetune.py) and measure it against the base model."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from streamrec.stream.cli.common import load_settings, setup_logging
from streamrec.stream.cli.reasons_finetune import add_finetune_parser

log = logging.getLogger(__name__)


def add_reasons_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reasons", help="model-written reasons: `streamrec reasons upgrade` / `finetune`"
    )
    rsub = p.add_subparsers(dest="reasons_command", required=True, metavar="ACTION")
    u = rsub.add_parser(
        "upgrade",
        help="rewrite the top items' reasons of published lists with the language model "
        "and publish them to STREAMREC_TOPIC_REASON_UPDATES",
    )
    u.set_defaults(func=cmd_reasons_upgrade)
    add_finetune_parser(rsub)  # its imports are light; its command loads torch lazily


def cmd_reasons_upgrade(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from streamrec.stream.kafka_io import ensure_topics
    from streamrec.stream.worker.local_model import LMUnavailableError
    from streamrec.stream.worker.reason_writer import build_writer

    settings = load_settings()
    setup_logging(settings.log_level)
    registry = CollectorRegistry()
    try:
        writer = build_writer(settings, registry)
    except LMUnavailableError as exc:
        msg = f"streamrec reasons upgrade: {exc}"
        raise SystemExit(msg) from None
    if settings.reason_writer_metrics_port:
        start_http_server(
            settings.reason_writer_metrics_port, addr=settings.metrics_host, registry=registry
        )

    async def run() -> None:
        await ensure_topics(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await writer.run(stop)
        finally:
            await writer.store.close()

    asyncio.run(run())
    log.info("reason writer stopped")
    return 0
