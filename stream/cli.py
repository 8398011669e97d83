"""``streamrec`` command line. Run ``streamrec --help`` or ``streamrec COMMAND --help``.

Configuration comes from STREAMREC_* environment variables (README, "Configuration");
flags only select what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from stream.evaluate_cli import add_evaluate_parser
from stream.settings import Settings

if TYPE_CHECKING:
    from engine.model import ItemModel
    from engine.ports import FloatArray
    from index.device import DeviceChoice
    from stream.redis_store import RedisStore

T = TypeVar("T")

log = logging.getLogger("streamrec")

DESCRIPTION = """\
streamrec: real-time recommendations with reasons, on Kafka and Redis.

commands:
  demo          start local Kafka + Redis, train if needed, run a worker, replay
                MovieLens-100K and show recommendations live (Ctrl-C stops all)
  worker        run a Faust worker (consumes streamrec.events, publishes recommendations)
  api           serve the HTTP read API (latest lists, /healthz, /readyz, /docs)
  experiment report NAME
                per-variant CTR and conversions of the running A/B experiment
  train         learn item vectors and the sequential user encoder (or --dataset ml-100k)
  index build   build the FAISS index of a trained model
  evaluate      full-ranking evaluation of our model against baselines, or with --replay
                its lists from a real worker against its offline ranking (docs/evaluation.md)
  topics        create the streamrec topics if missing
  replay        produce a catalog and/or an event log to Kafka
  watch         show recommendations live as they are published
  explain       print a user's latest recommendations with their full evidence
  forget        delete every piece of a user's state (history, purchases, lists)
"""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"STREAMREC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        msg = f"streamrec: invalid configuration: {problems}"
        raise SystemExit(msg) from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _load_training_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from engine import datasets

    if args.dataset == "ml-100k":
        data = datasets.load_movielens_100k()
        return data.events, data.catalog
    if args.events is None:
        msg = "streamrec: give --events PATH (CSV/Parquet) or --dataset ml-100k"
        raise SystemExit(msg)
    from stream.data_files import load_data_files

    return load_data_files(args.command, args.events, args.catalog)


def cmd_train(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from rich.console import Console

    from engine.hybrid_training import train_model
    from engine.sequential import SequenceParams
    from engine.text_encoders import TextEncoderError
    from engine.training import TrainParams
    from stream.progress import progress_callback

    console = Console(stderr=True, soft_wrap=True)
    events, catalog = _load_training_data(args)
    console.print(f"training on {len(events):,} events, {events['user_id'].nunique():,} users")
    try:
        sequence = (
            None
            if args.sequence_epochs == 0
            else SequenceParams(
                dim=args.sequence_dim,
                max_len=args.sequence_length,
                max_epochs=args.sequence_epochs,
                patience=args.patience,
                negatives=args.negatives,
            )
        )
    except ValueError as exc:
        msg = f"streamrec train: {exc}"
        raise SystemExit(msg) from None
    try:
        with progress_callback(console) as progress:
            model, report, seq_report = train_model(
                events,
                catalog,
                TrainParams(dim=args.dim, content_features_from=args.content_features_from),
                sequence,
                seed=args.seed,
                progress=progress,
                now=datetime.now(UTC),
            )
    except TextEncoderError as exc:
        msg = f"streamrec train: {exc}"
        raise SystemExit(msg) from None
    out = Path(args.out)
    model.save(out)
    if catalog is not None:
        catalog.to_parquet(out / "catalog.parquet")
    _print_markdown(console, report.to_markdown())
    if seq_report is not None:
        _print_markdown(console, seq_report.to_markdown())
    adapt = model.adaptation
    console.print(
        "per-user adaptation: "
        + (
            f"learning rate {adapt.learning_rate:g}, decay {adapt.decay:g}"
            if adapt.enabled
            else "off (no gain on validation)"
        )
    )
    held_out = model.metrics.get("validation_ndcg@10_ranker_heldout")
    if held_out is not None:
        base = model.metrics.get("validation_ndcg@10_base_heldout", float("nan"))
        console.print(
            f"second-stage ranker: {'used' if model.ranker is not None else 'off'} "
            f"(held-out validation NDCG@10 {held_out:.4f} vs {base:.4f} for the model's order)"
        )
        weights = {
            k.removeprefix("ranker_"): v
            for k, v in model.hyperparameters.items()
            if k.startswith("ranker_")
        }
        if weights:
            console.print(
                "ranker weights (standardised features): "
                + ", ".join(f"{k} {v:+.3f}" for k, v in weights.items())
            )
    console.print(f"model {model.version} written to {out}")
    return 0


def _print_markdown(console: Any, text: str) -> None:
    """A Markdown report, rendered on a terminal; as written (tables intact, not cut to 80
    columns) when the output goes to a file or a pipe."""
    if console.is_terminal:
        from rich.markdown import Markdown

        console.print(Markdown(text))
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def build_index(
    model_dir: Path,
    factory: str = "auto",
    device: DeviceChoice = "auto",
    say: Callable[[str], None] | None = None,
) -> tuple[int, int, str]:
    """Build the FAISS index of the model in ``model_dir`` and save it to ``model_dir/index``.

    Every item of the model is indexed with its popularity-augmented vector; catalog items
    (``model_dir/catalog.parquet``) the model never saw are indexed from their content, as
    the worker does for new items. Used by ``streamrec index build`` and the replay
    evaluation, so both serve the same index.

    ``factory="auto"`` chooses by catalog size (:mod:`index.tuning`): exact search up to
    50,000 items, above that the fastest approximate setting with recall@100 >= 0.95
    against exact search, measured on these vectors with queries of one-item histories;
    the measurements go to ``model_dir/index/tuning.json``.

    Returns:
        (items indexed, of which from content, the index factory used).

    Raises:
        SystemExit: No model in ``model_dir``.
    """
    import pandas as pd

    from engine.catalog import Catalog
    from engine.model import ItemModel
    from engine.recommender import Recommender, index_entries
    from index.device import choose_device
    from index.exact import ExactIndex
    from index.faiss_index import FaissItemIndex
    from stream.replay import catalog_items

    if not (model_dir / "model.json").is_file():
        msg = f"streamrec: no model in {model_dir} (model.json missing); run `streamrec train`"
        raise SystemExit(msg)
    model = ItemModel.load(model_dir)
    ids, vectors = index_entries(model)
    # Everything to index first: the model's items, and the catalog items the model never
    # saw, from their content as the worker does for new items. The index is chosen for
    # all of them (a catalog can be far larger than what the model was trained on).
    staging = ExactIndex(vectors.shape[1])
    staging.upsert(ids, vectors)
    catalog_path = model_dir / "catalog.parquet"
    added = 0
    if catalog_path.is_file():
        recommender = Recommender(model, staging, Catalog())
        for item in catalog_items(pd.read_parquet(catalog_path)):
            if item.item_id not in model.index:
                recommender.apply_item(item)
                added += 1
    ids, vectors = staging.entries()
    params: dict[str, int] = {}
    tuning = None
    if factory == "auto":
        factory, params, tuning = _choose_index(model, vectors, say)
    index = FaissItemIndex(vectors.shape[1], factory, choose_device(device), params=params)
    index.upsert(ids, vectors)
    index.save(model_dir / "index")
    tuning_path = model_dir / "index" / "tuning.json"
    if tuning is not None:
        tuning_path.write_text(json.dumps(tuning, indent=2) + "\n")
    else:
        tuning_path.unlink(missing_ok=True)
    return len(index), added, index.factory


def _choose_index(
    model: ItemModel, vectors: FloatArray, say: Callable[[str], None] | None
) -> tuple[str, dict[str, int], dict[str, Any] | None]:
    """(factory, search params, tuning report or None) for ``--factory auto``."""
    from engine.recommender import index_queries
    from index.tuning import default_candidates, tune_index

    candidates = default_candidates(len(vectors))
    if [c.factory for c in candidates] == ["Flat"]:
        return "Flat", {}, None
    report = tune_index(vectors, index_queries(model), candidates=candidates, progress=say)
    choice = report.choice
    if say is not None:
        say(
            f"chose {choice.factory} {choice.params}: recall@{report.k} {choice.recall:.4f}, "
            f"{report.speedup:.1f}x exact search"
        )
    return choice.factory, dict(choice.params), report.as_dict()


def cmd_index_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=True)
    model_dir = Path(args.model_dir)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        # Unknown length (the tuning stops early once a setting is exact enough): the bar
        # pulses, each measurement is printed above it as it finishes.
        task = bar.add_task(f"building the index of {model_dir}", total=None)

        def say(line: str) -> None:
            bar.console.print(line)
            bar.update(task, description=f"index build: {line[:60]}")

        indexed, added, factory = build_index(model_dir, args.factory, args.device, say=say)
    console.print(
        f"indexed {indexed:,} items ({added:,} from content) with {factory} "
        f"into {model_dir / 'index'}"
    )
    return 0


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from stream.experiment_config import load_running_experiment
    from stream.experiment_report import plot_report, read_report

    settings = _settings()
    experiment = load_running_experiment(settings)
    if experiment is None or experiment.name != args.name:
        running = "none" if experiment is None else repr(experiment.name)
        msg = (
            f"streamrec: experiment {args.name!r} is not in STREAMREC_EXPERIMENTS_FILE "
            f"(running: {running})"
        )
        raise SystemExit(msg)
    report = asyncio.run(_with_store(settings, lambda store: read_report(store, experiment)))
    for line in report.lines():
        print(line)  # noqa: T201
    if args.chart is not None:
        plot_report(report, args.chart)
        print(f"chart: {args.chart}")  # noqa: T201
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from stream.api import run_api

    settings = _settings()
    _setup_logging(settings.log_level)
    run_api(settings, args.host, args.port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.experiments import ExperimentConfigError
    from stream.kafka_io import KafkaUnavailableError, TopicCreationError
    from stream.worker import ConfigurationError, run_worker

    settings = _settings()
    _setup_logging(settings.log_level)
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


def cmd_topics(args: argparse.Namespace) -> int:
    from stream.kafka_io import KafkaUnavailableError, TopicCreationError, ensure_topics

    try:
        created = asyncio.run(ensure_topics(_settings()))
    except (KafkaUnavailableError, TopicCreationError) as exc:
        msg = f"streamrec: {exc}"
        raise SystemExit(msg) from None
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))  # noqa: T201
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import pandas as pd
    from rich.progress import Progress

    from engine import datasets
    from stream.data_files import load_data_files
    from stream.replay import catalog_items, publish_catalog, publish_events, wait_for_catalog

    settings = _settings()
    events: pd.DataFrame | None
    catalog: pd.DataFrame | None
    if args.dataset == "ml-100k":
        data = datasets.load_movielens_100k()
        events, catalog = data.events, data.catalog
    else:
        events, catalog = load_data_files(args.command, args.events, args.catalog)
    if catalog is not None and not args.events_only:
        items = catalog_items(catalog)
        n = asyncio.run(publish_catalog(settings, items))
        print(f"published {n:,} items to {settings.topic_items}")  # noqa: T201
        if events is not None and not args.catalog_only:
            # Events on items the worker has not taken in yet would be dead-lettered.
            asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    if events is not None and not args.catalog_only:
        if args.limit:
            events = events.iloc[-args.limit :] if args.tail else events.iloc[: args.limit]
        with Progress() as bar:
            task = bar.add_task("events", total=len(events))
            n = asyncio.run(
                publish_events(
                    settings,
                    events,
                    rate=args.rate,
                    live_ts=not args.keep_ts,
                    progress=lambda k: bar.advance(task, k),
                )
            )
        print(f"published {n:,} events to {settings.topic_events}")  # noqa: T201
    return 0


class PseudonymMismatchError(RuntimeError):
    """This command's STREAMREC_USER_ID_HMAC_KEY is not the workers': it would miss
    every user."""


async def _with_store(
    settings: Settings, use: Callable[[RedisStore], Awaitable[T]], *, users: bool = False
) -> T:
    """Run ``use`` with a Redis store built from the settings, closing it afterwards.

    A one-shot command does not wait for Redis as the worker does: an unreachable server
    raises the connection error at once (``main`` names the setting). With ``users``, a
    command keyed differently from the workers stops (:class:`PseudonymMismatchError`):
    a forget would have deleted nothing and said it was done.
    """
    from stream.redis_store import RedisStore

    store = RedisStore.from_settings(settings)
    try:
        await store.ping()
        if users:
            problem = await store.pseudonym_mismatch()
            if problem is not None:
                raise PseudonymMismatchError(problem)
        return await use(store)
    finally:
        await store.close()


def cmd_watch(args: argparse.Namespace) -> int:
    from stream.watch import watch

    settings = _settings()

    async def run() -> int:
        items, _ = await _with_store(settings, lambda store: store.catalog_snapshot())
        return await watch(settings, {i.item_id: i.title for i in items}, stop_after=args.count)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    settings = _settings()
    raw = asyncio.run(
        _with_store(settings, lambda store: store.latest_recommendation(args.user_id), users=True)
    )
    if raw is None:
        print(f"no recommendations stored for user {args.user_id}")  # noqa: T201
        return 1
    rec = json.loads(raw)
    items = [i for i in rec["items"] if args.item_id is None or i["item_id"] == args.item_id]
    if not items:
        print(f"item {args.item_id} is not in the latest list of user {args.user_id}")  # noqa: T201
        return 1
    rec["items"] = items
    print(json.dumps(rec, indent=2, ensure_ascii=False))  # noqa: T201
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    settings = _settings()
    now = time.time_ns() // 1_000_000
    keys = asyncio.run(
        _with_store(settings, lambda store: store.forget(args.user_id, now), users=True)
    )
    print(  # noqa: T201
        f"forgot user {args.user_id}: {keys} key(s) deleted (history, purchases, seen items, "
        "dedupe markers, stored list and vector); their events stamped until now are ignored "
        f"for {settings.dedupe_ttl_s} s"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

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
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "train", help="train item vectors and the sequential user encoder from a log"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["ml-100k"], help="a ready-made public data set")
    src.add_argument("--events", help="interaction log (CSV/Parquet, event schema)")
    p.add_argument("--catalog", help="catalog (CSV/Parquet, item schema)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("worker",):
        _setup_logging("WARNING")
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from stream.kafka_io import KafkaUnavailableError

    try:
        return int(args.func(args))
    except (KafkaUnavailableError, PseudonymMismatchError) as exc:
        msg = f"streamrec {args.command}: {exc}"
        raise SystemExit(msg) from None
    except (RedisConnectionError, RedisTimeoutError) as exc:  # the URL may hold a password
        msg = (
            f"streamrec {args.command}: cannot reach Redis ({type(exc).__name__}); check "
            "STREAMREC_REDIS_URL and that redis-server is running"
        )
        raise SystemExit(msg) from None


if __name__ == "__main__":
    raise SystemExit(main())
