"""``streamrec train`` and ``streamrec index build``: a model from an event log, and its
candidate index.

Before training, ``streamrec train`` prints its plan (the data, the parts it trains, the
seed) and an estimated duration from :func:`estimate_duration`, a linear formula in the
events calibrated on a 2-core machine; then one bar follows training through every
stage the engine reports (:data:`streamrec.engine.offline.hybrid_training.TRAINING_STAGES`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Calibration of :func:`estimate_duration` on 2 CPU cores (CPU torch), MovieLens-100K
# (100,000 events, 943 users, 1,682 items):
#   `time streamrec train --dataset ml-100k --sequence-epochs 0`: 69.5 s wall, of which
#   about 4 s start-up and loading before the plan is printed (validation grid 45.8 s,
#   fit 2.1 s, content 1.6 s, the rest adaptation, ranker, saving and reports);
#   one encoder epoch (training + validation NDCG): about 30 s of CPU time (58-75 s wall
#   when measured, with other jobs sharing the 2 cores); 25 s wall taken for a quiet
#   machine, which puts the demo's first training (4 epochs) at about 4 minutes.
#: Everything but the encoder (grid search, fit, adaptation, ranker, saving), per event.
BASE_SECONDS_PER_EVENT = 65.0 / 100_000
#: Fixed cost of a run after the plan, whatever its size (saving, reports).
FIXED_SECONDS = 1.0
#: One epoch of the sequential encoder (training and validation), per event.
EPOCH_SECONDS_PER_EVENT = 25.0 / 100_000
#: The machine the formula was calibrated on.
CALIBRATION_MACHINE = "a 2-core machine"


@dataclass(frozen=True)
class Estimate:
    """A training duration estimate.

    Attributes:
        base_s: Seconds for everything but the sequential encoder.
        epoch_s: Seconds per encoder epoch (0 without the encoder).
        max_epochs: The encoder's epoch cap (0: no encoder).
    """

    base_s: float
    epoch_s: float
    max_epochs: int

    @property
    def most_s(self) -> float:
        """The longest run: the validation run to the epoch cap, then a refit as long."""
        return self.base_s + self.epoch_s * 2 * self.max_epochs


def estimate_duration(n_events: int, sequence_epochs: int) -> Estimate:
    """Training time from the number of events and the encoder's epoch cap.

    ``base = FIXED_SECONDS + BASE_SECONDS_PER_EVENT * events`` and
    ``epoch = EPOCH_SECONDS_PER_EVENT * events``; at most ``base + 2 * epochs * epoch``
    (early stopping's validation run, then the refit on all events for the best epoch
    count). Linear in the events: a rough guide for logs like MovieLens (about a hundred
    events per user), measured on 2 CPU cores.
    """
    epochs = max(sequence_epochs, 0)
    return Estimate(
        base_s=FIXED_SECONDS + BASE_SECONDS_PER_EVENT * n_events,
        epoch_s=EPOCH_SECONDS_PER_EVENT * n_events if epochs else 0.0,
        max_epochs=epochs,
    )


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 5 min"`` (rounded; at least 1 s)."""
    total = max(round(seconds), 1)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min" if secs == 0 else f"{minutes} min {secs} s"
    hours, minutes = divmod(round(total / 60), 60)
    return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"


@dataclass(frozen=True)
class TrainingPlan:
    """What ``streamrec train`` is about to do.

    Attributes:
        source: Where the events come from ("MovieLens-100K" or a path).
        n_events: Events.
        n_users: Distinct users.
        n_items: Distinct items of the events.
        catalog_items: Items of the catalog, or None without one.
        sequence_epochs: The encoder's epoch cap (0: no encoder).
        patience: Early-stopping patience in epochs.
        seed: The seed of every step.
        sequence_minutes: The encoder's time budget (0: none).
        validation: How validation targets are held out (``"leave-last-out"`` or
            ``"session"``).
    """

    source: str
    n_events: int
    n_users: int
    n_items: int
    catalog_items: int | None
    sequence_epochs: int
    patience: int
    seed: int
    sequence_minutes: float = 0.0
    validation: str = "leave-last-out"


def plan_text(plan: TrainingPlan) -> str:
    """The plan and the estimated duration, as printed before training."""
    if plan.catalog_items is None:
        catalog = "none: no content encoder for cold-start items, no categories"
    else:
        catalog = (
            f"{plan.catalog_items:,} items (titles and tags train the content encoder "
            "for cold-start items)"
        )
    budget = plan.sequence_minutes * 60
    if plan.sequence_epochs > 0:
        encoder = (
            f"trains, at most {plan.sequence_epochs} epochs, early stopping after "
            f"{plan.patience} epochs without a better validation NDCG@10, then a refit on all "
            "events"
        )
        if budget > 0:
            encoder += (
                f"; within {format_duration(budget)} (--sequence-minutes): then the best "
                "epoch so far is kept, and the refit runs only if it fits"
            )
    else:
        encoder = "off (--sequence-epochs 0): co-occurrence model only"
    held_out = (
        "the last 20% of sessions by time, each on its held-out last event"
        if plan.validation == "session"
        else "each user's held-out last event"
    )
    est = estimate_duration(plan.n_events, plan.sequence_epochs)
    if est.max_epochs and budget > 0 and est.base_s + budget < est.most_s:
        duration = (
            f"about {format_duration(est.base_s)} plus at most {format_duration(budget)} for "
            f"the encoder ({format_duration(est.epoch_s)} per epoch): at most "
            f"{format_duration(est.base_s + budget)}"
        )
    elif est.max_epochs:
        duration = (
            f"about {format_duration(est.base_s)} plus {format_duration(est.epoch_s)} per "
            f"encoder epoch: at most {format_duration(est.most_s)} at the "
            f"{est.max_epochs}-epoch cap, usually less (early stopping)"
        )
    else:
        duration = f"about {format_duration(est.base_s)}"
    rows = [
        ("events", f"{plan.n_events:,} from {plan.source}"),
        ("users", f"{plan.n_users:,}"),
        ("items", f"{plan.n_items:,} in the events"),
        ("catalog", catalog),
        ("co-occurrence model", f"item vectors tuned on {held_out}"),
        ("sequential encoder", encoder),
        ("then", "per-user adaptation and the second-stage ranker, tuned on validation"),
        ("seed", str(plan.seed)),
        ("estimated time", f"{duration} (an estimate for {CALIBRATION_MACHINE})"),
    ]
    width = max(len(name) for name, _ in rows)
    return "streamrec train will train:\n" + "\n".join(
        f"  {name:<{width}}  {value}" for name, value in rows
    )


def _load_training_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from streamrec.engine.offline import datasets

    if args.dataset == "ml-100k":
        data = datasets.load_movielens_100k()
        return data.events, data.catalog
    if args.events is None and args.sessions is None:
        msg = "streamrec: give --events PATH (CSV/Parquet), --sessions PATH or --dataset ml-100k"
        raise SystemExit(msg)
    from streamrec.stream.cli.data_files import load_data_files

    return load_data_files(args.command, args.events, args.catalog, sessions=args.sessions)


def cmd_train(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from rich.console import Console

    from streamrec.engine.offline.hybrid_training import TRAINING_STAGES, train_model
    from streamrec.engine.offline.training import TrainParams, Validation
    from streamrec.engine.serving.sequential import SequenceParams
    from streamrec.engine.serving.text_encoders import TextEncoderError
    from streamrec.stream.cli.progress import progress_callback

    console = Console(stderr=True, soft_wrap=True)
    events, catalog = _load_training_data(args)
    validation: Validation = args.validation or ("session" if args.sessions else "leave-last-out")
    plan = TrainingPlan(
        source="MovieLens-100K" if args.dataset == "ml-100k" else str(args.sessions or args.events),
        n_events=len(events),
        n_users=int(events["user_id"].nunique()),
        n_items=int(events["item_id"].nunique()),
        catalog_items=None if catalog is None else len(catalog),
        sequence_epochs=max(args.sequence_epochs, 0),
        patience=args.patience,
        seed=args.seed,
        sequence_minutes=max(args.sequence_minutes, 0.0),
        validation=validation,
    )
    console.print(plan_text(plan), markup=False, highlight=False)
    if validation == "session" and args.dataset:
        console.print(
            "warning: --validation session treats every user as a session; "
            f"{plan.source}'s users come back over months, so leave-last-out suits it",
            markup=False,
            highlight=False,
        )
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
        stages = [
            s for s in TRAINING_STAGES if sequence is not None or not s.startswith("sequence")
        ]
        with progress_callback(console, stages, title="training") as progress:
            model, report, seq_report = train_model(
                events,
                catalog,
                TrainParams(dim=args.dim, content_features_from=args.content_features_from),
                sequence,
                seed=args.seed,
                progress=progress,
                now=datetime.now(UTC),
                sequence_budget_s=args.sequence_minutes * 60 if args.sequence_minutes > 0 else None,
                validation=validation,
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
