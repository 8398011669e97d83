"""``streamrec train`` and ``streamrec index build``: a model from an event log, and its
candidate index."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _load_training_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from streamrec.engine.offline import datasets

    if args.dataset == "ml-100k":
        data = datasets.load_movielens_100k()
        return data.events, data.catalog
    if args.events is None:
        msg = "streamrec: give --events PATH (CSV/Parquet) or --dataset ml-100k"
        raise SystemExit(msg)
    from streamrec.stream.cli.data_files import load_data_files

    return load_data_files(args.command, args.events, args.catalog)


def cmd_train(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from rich.console import Console

    from streamrec.engine.offline.hybrid_training import train_model
    from streamrec.engine.offline.training import TrainParams
    from streamrec.engine.serving.sequential import SequenceParams
    from streamrec.engine.serving.text_encoders import TextEncoderError
    from streamrec.stream.cli.progress import progress_callback

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


def cmd_index_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from streamrec.index.build import ModelNotFoundError, build_index

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

        try:
            indexed, added, factory = build_index(model_dir, args.factory, args.device, say=say)
        except ModelNotFoundError as exc:
            msg = f"streamrec index build: {exc}"
            raise SystemExit(msg) from None
    console.print(
        f"indexed {indexed:,} items ({added:,} from content) with {factory} "
        f"into {model_dir / 'index'}"
    )
    return 0
