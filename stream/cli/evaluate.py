"""``streamrec evaluate``: our model against strong baselines, full ranking, one split.

Loads a data set, runs :func:`streamrec.engine.offline.evaluation_runner.run_evaluation` with rich
progress
bars, writes ``results.md``, ``results.json`` and ``results.png`` (NDCG@10 and Recall@10
with 95% CI error bars; matplotlib with the Agg backend, imported only here) into ``--out``
and prints the Markdown table on stdout. With ``--replay`` it runs
:func:`streamrec.stream.cli.replay_eval.run_replay_evaluation` instead (our model through a real
worker on
a local broker, next to its offline number) and writes ``replay.md`` and ``replay.json``.
See docs/evaluation.md.

Registered in ``stream/cli/main.py`` by :func:`add_evaluate_parser`. Heavy imports happen in the
command, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamrec.engine.offline.evaluation_report import EvaluationReport

log = logging.getLogger("streamrec.evaluate")

#: The same names, in the same order, as ``streamrec.engine.offline.evaluation_runner.MODEL_NAMES``
#: (tested).
DEFAULT_MODELS = "ours,popular,popular-7d,item-knn,ease,als,sasrec"
DEFAULT_TEST_FRACTION = 0.2


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the ``streamrec`` sub-command parsers.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The ``evaluate`` parser (its ``func`` default runs the command).
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="offline full-ranking evaluation of our model against strong baselines",
        description="Evaluate our model and baselines on the same split, ranking every "
        "held-out item against all items (see docs/evaluation.md).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["ml-100k"], help="a ready-made public data set")
    src.add_argument("--events", help="interaction log (CSV/Parquet, event schema)")
    src.add_argument("--sessions", help="session log (session_id;user_id;item_id;...)")
    p.add_argument("--catalog", help="catalog (CSV/Parquet) for --events")
    p.add_argument(
        "--protocol",
        choices=["leave-last-out", "time", "session"],
        default="leave-last-out",
        help="leave-last-out; time (a global cut); session (users are sessions: sessions "
        "after a cut are tested on their last event, given the earlier ones)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="share of events (--protocol time) or sessions (--protocol session) after the "
        f"cut ({DEFAULT_TEST_FRACTION})",
    )
    p.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--sequence-epochs",
        type=int,
        default=200,
        help="most epochs of our sequential encoder (early-stopped); 0: co-occurrence alone",
    )
    sasrec = p.add_argument_group(
        "RecBole SASRec baseline",
        "RecBole's own SASRec (pip install --no-deps recbole==1.2.1), trained on the same "
        "split; on 2 CPU cores one MovieLens-100K epoch takes minutes",
    )
    sasrec.add_argument(
        "--sasrec-minutes",
        type=float,
        default=None,
        help=(
            "training time budget; the best epoch so far is kept (default: early stopping). "
            "With --cache-dir a budget-cut run resumes from its checkpoint on the next call; "
            "0 reports the run saved so far without training"
        ),
    )
    sasrec.add_argument(
        "--sasrec-epochs", type=int, default=None, help="maximum epochs (RecBole default 200)"
    )
    sasrec.add_argument(
        "--sasrec-threads", type=int, default=None, help="torch threads for SASRec training"
    )
    sasrec.add_argument(
        "--cache-dir",
        default=None,
        help="cache each model's test scores here; a rerun with the same split and settings "
        "reads them back instead of training (SASRec takes hours on a CPU)",
    )
    p.add_argument("--save-model", default=None, help="save our trained model into this folder")
    p.add_argument(
        "--out", default="evaluation", help="folder for results.md/.json/.png (replay.md/.json)"
    )
    replay = p.add_argument_group(
        "online replay",
        "--replay trains our model on the same split, replays each user's training events "
        "through a real worker on a local Kafka broker and Redis, and scores the list it "
        "published after the last one, next to the offline number for the same model",
    )
    replay.add_argument(
        "--replay", action="store_true", help="online replay vs offline instead of baselines"
    )
    replay.add_argument(
        "--model",
        default=None,
        help="serve this model folder instead of training one; it must come from the same "
        "split (streamrec evaluate --save-model)",
    )
    replay.add_argument(
        "--users", type=int, default=None, help="a seeded sample of N test users (default all)"
    )
    replay.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events/s to produce (default: as fast as possible)",
    )
    replay.add_argument(
        "--set",
        dest="worker_settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting, e.g. near_duplicate_cosine=2 (STREAMREC_NEAR_DUPLICATE_COSINE)",
    )
    p.set_defaults(func=cmd_evaluate)
    return p


def _sequence_params(args: argparse.Namespace) -> Any:
    from streamrec.engine.serving.sequential import SequenceParams

    if args.sequence_epochs < 0:
        msg = f"streamrec evaluate: --sequence-epochs must be >= 0, got {args.sequence_epochs}"
        raise SystemExit(msg)
    return None if args.sequence_epochs == 0 else SequenceParams(max_epochs=args.sequence_epochs)


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from streamrec.engine.offline import datasets
    from streamrec.stream.cli.data_files import load_data_files

    if args.catalog and not args.events:
        msg = "streamrec evaluate: --catalog goes with --events"
        raise SystemExit(msg)
    try:
        if args.dataset == "ml-100k":
            data = datasets.load_movielens_100k()
            return data.events, data.catalog, "ml-100k"
        if args.sessions:
            return datasets.load_session_log(Path(args.sessions)), None, Path(args.sessions).name
    except datasets.DatasetError as exc:
        msg = f"streamrec evaluate: {exc}"
        raise SystemExit(msg) from None
    events, catalog = load_data_files("evaluate", args.events, args.catalog)
    return events, catalog, Path(args.events).name


def machine_description() -> str:
    """CPU model and core count, e.g. ``"AMD EPYC, 2 cores"``."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def write_chart(report: EvaluationReport, path: Path) -> None:
    """A PNG bar chart of NDCG@10 and Recall@10 per model with 95% CI error bars.

    Args:
        report: The evaluation report.
        path: Where to write the PNG.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'streamrec[eval]'``).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [m.name for m in report.results]
    x = np.arange(len(names))
    width = 0.38
    fig = Figure(figsize=(max(6.0, 1.3 * len(names)), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for offset, key, label in (
        (-width / 2, "ndcg@10", "NDCG@10"),
        (width / 2, "recall@10", "Recall@10"),
    ):
        est = [m.result.metrics[key] for m in report.results]
        ax.bar(
            x + offset,
            [e.mean for e in est],
            width,
            yerr=[e.half_width for e in est],
            capsize=3,
            label=label,
        )
    ax.set_xticks(x, names)
    ax.set_ylabel("mean over test users (95% CI)")
    ax.set_title(
        f"{report.dataset}, {report.protocol}: {report.n_test_users:,} users, "
        f"full ranking over {report.n_items:,} items",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _replay_settings(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            msg = f"streamrec evaluate: --set must be NAME=VALUE, got {pair!r}"
            raise SystemExit(msg)
        settings[name.strip().lower().removeprefix("streamrec_")] = value.strip()
    return settings


def cmd_replay(args: argparse.Namespace) -> int:
    """Run ``streamrec evaluate --replay``; returns the exit status."""
    from rich.console import Console

    from streamrec.stream.cli.local_infra import LocalInfraError
    from streamrec.stream.cli.progress import progress_callback
    from streamrec.stream.cli.replay_eval import ReplayError, run_replay_evaluation

    console = Console(stderr=True, soft_wrap=True)
    if args.models != DEFAULT_MODELS:
        msg = "streamrec evaluate: --models does not apply to --replay (it evaluates ours)"
        raise SystemExit(msg)
    if args.users is not None and args.users < 1:
        msg = f"streamrec evaluate: --users must be >= 1, got {args.users}"
        raise SystemExit(msg)
    worker_settings = _replay_settings(args.worker_settings)
    events, catalog, name = _load(args)
    console.print(
        f"replay evaluation on {name}: {len(events):,} events, "
        f"{events['user_id'].nunique():,} users, {args.protocol} split"
    )
    try:
        with progress_callback(console) as progress:
            report = run_replay_evaluation(
                events,
                catalog,
                protocol=args.protocol,
                seed=args.seed,
                users_limit=args.users,
                rate=args.rate,
                progress=progress,
                test_fraction=args.test_fraction or DEFAULT_TEST_FRACTION,
                dataset=name,
                sequence_params=_sequence_params(args),
                trained_model=None if args.model is None else Path(args.model),
                worker_settings=worker_settings,
            )
    except (ValueError, ReplayError, LocalInfraError) as exc:
        msg = f"streamrec evaluate: {exc}"
        raise SystemExit(msg) from None
    report = replace(report, machine=machine_description())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.md").write_text(report.to_markdown(), encoding="utf-8")
    (out / "replay.json").write_text(report.to_json(), encoding="utf-8")
    sys.stdout.write(report.to_markdown())
    console.print(f"results written to {out}/ (replay.md, replay.json)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``streamrec evaluate`` with parsed arguments; returns the exit status."""
    from rich.console import Console

    from streamrec.engine.offline.evaluation_runner import (
        MODEL_NAMES,
        BaselineGrids,
        run_evaluation,
    )
    from streamrec.stream.cli.progress import progress_callback

    if args.test_fraction is not None and args.protocol == "leave-last-out":
        msg = "streamrec evaluate: --test-fraction applies to --protocol time or session only"
        raise SystemExit(msg)
    if args.replay:
        return cmd_replay(args)
    if args.users is not None or args.rate is not None or args.worker_settings or args.model:
        msg = "streamrec evaluate: --users, --rate, --set and --model apply to --replay only"
        raise SystemExit(msg)
    console = Console(stderr=True, soft_wrap=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        msg = (
            f"streamrec evaluate: --models must name some of {', '.join(MODEL_NAMES)}, "
            f"got {args.models!r}"
        )
        raise SystemExit(msg)
    events, catalog, name = _load(args)
    console.print(
        f"evaluating {', '.join(models)} on {name}: {len(events):,} events, "
        f"{events['user_id'].nunique():,} users, {args.protocol} split"
    )
    try:
        with progress_callback(console) as progress:
            report = run_evaluation(
                events,
                catalog,
                args.protocol,
                args.seed,
                models,
                progress,
                test_fraction=args.test_fraction or DEFAULT_TEST_FRACTION,
                dataset=name,
                sequence_params=_sequence_params(args),
                grids=BaselineGrids(
                    sasrec={} if args.sasrec_epochs is None else {"epochs": args.sasrec_epochs},
                    sasrec_max_seconds=None
                    if args.sasrec_minutes is None
                    else 60.0 * args.sasrec_minutes,
                    sasrec_threads=args.sasrec_threads,
                ),
                cache_dir=None if args.cache_dir is None else Path(args.cache_dir),
                save_model=None if args.save_model is None else Path(args.save_model),
            )
    except ValueError as exc:
        msg = f"streamrec evaluate: {exc}"
        raise SystemExit(msg) from None
    report = replace(report, machine=machine_description())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report.to_markdown(), encoding="utf-8")
    (out / "results.json").write_text(report.to_json(), encoding="utf-8")
    try:
        write_chart(report, out / "results.png")
    except ImportError as exc:
        log.warning("no chart: %s; run `pip install 'streamrec[eval]'`", exc)
    for skipped, reason in report.skipped.items():
        console.print(f"[yellow]skipped {skipped}[/]: {reason}")
    sys.stdout.write(report.to_markdown())
    console.print(f"results written to {out}/ (results.md, results.json, results.png)")
    return 0
