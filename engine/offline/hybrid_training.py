"""Training the served model: co-occurrence item vectors plus a sequential user encoder.

1. :func:`streamrec.engine.offline.training.train_item_model` learns the item vectors (tuned on
   validation,
   refit on all events): the linear part, which also drives reasons and cold start.
2. The sequential encoder (:mod:`streamrec.engine.serving.sequential`) trains on the
   validation split's training part (every user's events but the last, or for session
   logs the sessions before the validation cut), with early stopping on the held-out
   targets (the same validation split as step 1).
3. The weight of the encoder's score is chosen on that validation split, against the
   linear part fitted on the validation training events at the chosen settings (the fit
   the linear model's own tuning already made). Weight 0
   (encoder off) is one of the candidates, so the encoder is only used when it helps.
4. The encoder is refit on all events for the best epoch count (``refit=True``).
5. The per-user online adaptation (:mod:`streamrec.engine.serving.adaptation`) is tuned on the same
   validation split, on top of the chosen blend; learning rate 0 (off) is a candidate.
6. The second-stage ranker (:mod:`streamrec.engine.serving.ranker`) is trained on the validation
   users'
   candidates from that blend, judged on half of them it was not trained on, and kept
   only if it beats the blend's own order there.

The result is one :class:`streamrec.engine.serving.model.ItemModel` whose index vectors are
``[item vector, weight * encoder item embedding]``: serving stays one inner-product search.

Example:
    >>> model, report = train_model(events, catalog, TrainParams(), SequenceParams(), seed=0)
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.sequential_training import (
    Sequences,
    TrainedEncoder,
    ValidationSet,
    heldout_ndcg,
    holdout_last,
    holdout_split,
    train_sequences,
    user_sequences,
)
from streamrec.engine.offline.training import (
    VALIDATION_FRACTION,
    Progress,
    TrainParams,
    TrainReport,
    Validation,
    train_item_model,
)
from streamrec.engine.serving.adaptation import AdaptationParams, adaptations
from streamrec.engine.serving.candidates import full_ranking, ranker_inputs
from streamrec.engine.serving.item_stats import TrendingItem, TrendParams, trending_in_log
from streamrec.engine.serving.model import ItemModel, make_version
from streamrec.engine.serving.ranker import CoTable, RankerSettings, train_ranker
from streamrec.engine.serving.sequential import SequenceParams

__all__ = [
    "SEQUENCE_WEIGHTS",
    "TRAINING_STAGES",
    "SequenceReport",
    "train_model",
    "trending_at_end",
]

logger = logging.getLogger(__name__)

#: The stages :func:`train_model` reports through ``progress``, in the order they run.
TRAINING_STAGES: tuple[str, ...] = (
    "validate",
    "fit",
    "sequence: epochs",
    "sequence: refit",
    "adaptation",
    "ranker",
)

#: Weights of the encoder's score tried on validation (0: linear part only).
SEQUENCE_WEIGHTS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 100.0)

#: Per-user adaptation steps tried on validation (learning rate 0: off).
ADAPTATION_GRID: tuple[AdaptationParams, ...] = (
    AdaptationParams(),
    *(
        AdaptationParams(learning_rate=lr, decay=decay)
        for lr in (0.05, 0.1, 0.2, 0.5, 1.0)
        for decay in (0.5, 0.8, 0.95)
    ),
)


@dataclass(frozen=True, eq=False)
class AdaptationReport:
    """How the per-user adaptation was chosen.

    Attributes:
        chosen: The chosen step (learning rate 0: off).
        scores: (step, validation NDCG@10) of each step tried.
        added: (u, n) what the chosen step adds to the validation users' scores.
    """

    chosen: AdaptationParams
    scores: tuple[tuple[AdaptationParams, float], ...]
    added: npt.NDArray[np.float32] = field(repr=False)

    @property
    def validation_ndcg(self) -> float:
        return dict(self.scores).get(self.chosen, math.nan)


def tune_adaptation(
    validation_model: ItemModel,
    columns: Sequence[str],
    base: npt.NDArray[np.floating],
    validation: ValidationSet,
    grid: Sequence[AdaptationParams] = ADAPTATION_GRID,
    progress: Callable[[int, int], None] | None = None,
) -> AdaptationReport:
    """Pick the adaptation step with the best validation NDCG@10 on top of ``base``.

    Args:
        validation_model: The linear model fitted on the validation training events.
        columns: The item ids of ``base``'s columns (``validation.history`` rows index them).
        base: (u, n) the served scores without adaptation for the validation users.
        validation: The held-out last events.
        grid: Steps to try; ties go to the earlier one (put "off" first).
        progress: Called as ``progress(done, len(grid))`` after each step.

    Returns:
        The chosen step, every step's score, and what the chosen step adds.
    """
    # The users' history vectors and the items' vectors, once for the whole grid.
    cols = validation_model.rows(columns)
    known = cols >= 0
    items = np.zeros((len(columns), validation_model.dim), dtype=np.float32)
    items[known] = validation_model.vectors[cols[known]]
    histories = [
        (validation_model.vectors[rows], weights)
        for rows, weights in (
            validation_model.history([columns[r] for r in h.tolist()], kinds)
            for h, kinds in zip(validation.history, validation.types, strict=True)
        )
    ]
    best: tuple[AdaptationParams, float, npt.NDArray[np.float32]] | None = None
    scores: list[tuple[AdaptationParams, float]] = []
    for params in grid:
        added: npt.NDArray[np.float32] = (
            adaptations(
                [v for v, _ in histories], [w for _, w in histories], params, validation_model.dim
            )
            @ items.T
        )
        score = heldout_ndcg(base + added, validation.history, validation.targets)
        scores.append((params, score))
        if best is None or score > best[1]:  # ties keep the earlier step
            best = (params, score, added)
        if progress is not None:
            progress(len(scores), len(grid))
    if best is None:
        msg = "grid must list at least one adaptation step, got ()"
        raise ValueError(msg)
    return AdaptationReport(best[0], tuple(scores), best[2])


@dataclass(frozen=True)
class SequenceReport:
    """How the sequential part was trained and weighted.

    Attributes:
        params: The encoder's settings.
        best_epoch: The early-stopping epoch (also the refit's epoch count).
        epochs_run: Epochs of the validation run.
        curve: (epoch, loss, validation NDCG@10) of the validation run.
        weight: The chosen weight of the encoder's score.
        weight_scores: Validation NDCG@10 of each weight tried.
        refit: Whether the encoder was refit on all events.
        seconds: Wall time of the sequential part.
    """

    params: SequenceParams
    best_epoch: int
    epochs_run: int
    curve: tuple[tuple[int, float, float], ...]
    weight: float
    weight_scores: tuple[tuple[float, float], ...]
    refit: bool
    seconds: float = field(default=0.0)

    @property
    def validation_ndcg(self) -> float:
        """Validation NDCG@10 of the chosen weight."""
        return dict(self.weight_scores).get(self.weight, math.nan)

    def to_markdown(self) -> str:
        """The weight table and the early-stopping facts, as Markdown."""
        fate = "refit on all events" if self.refit else "kept from validation"
        lines = [
            f"Sequential encoder: best epoch {self.best_epoch} of {self.epochs_run} "
            f"(patience {self.params.patience}), {fate}; chosen weight {self.weight:g}.",
            "",
            "| weight | validation NDCG@10 |",
            "|---:|---:|",
        ]
        lines += [f"| {w:g} | {s:.4f} |" for w, s in self.weight_scores]
        return "\n".join(lines) + "\n"


def train_model(
    events: pd.DataFrame,
    catalog: pd.DataFrame | None,
    params: TrainParams,
    sequence: SequenceParams | None,
    seed: int,
    progress: Progress | None = None,
    *,
    refit: bool = True,
    weights: Sequence[float] = SEQUENCE_WEIGHTS,
    rank: bool = True,
    now: datetime | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sequence_budget_s: float | None = None,
    validation: Validation = "leave-last-out",
    validation_fraction: float = VALIDATION_FRACTION,
) -> tuple[ItemModel, TrainReport, SequenceReport | None]:
    """Train the linear model and, unless ``sequence`` is None, the sequential encoder.

    Args:
        events: Training events (event schema).
        catalog: Item catalog, or None.
        params: The linear model's grid and settings.
        sequence: The encoder's settings, or None for the linear model alone.
        seed: Seeds every step; equal seeds and inputs give identical models.
        progress: Called as ``progress(stage, done, total)``; the stages, in order:
            :data:`TRAINING_STAGES` (the ``sequence:`` ones only with ``sequence``, the
            refit only when the encoder is used, ``ranker`` only with ``rank``).
        refit: Refit the encoder on all events for the best epoch count.
        weights: Encoder score weights to try on validation.
        rank: Train the second-stage ranker (:mod:`streamrec.engine.serving.ranker`); it is kept
            only if it
            beats the model's order on held-out validation users.
        now: Creation time for the version (default: the last event's time).
        clock: Monotonic seconds.
        sequence_budget_s: Seconds the encoder may train, its refit included (None: no
            limit). Past it no epoch starts and the best epoch so far is kept; the refit
            on all events runs only if it fits in what is left.
        validation: How every step's validation targets are held out: each user's last
            event, or for session logs the last sessions by time
            (:data:`streamrec.engine.offline.training.Validation`).
        validation_fraction: With ``"session"`` validation, the share of sessions held out.

    Returns:
        ``(model, linear report, sequence report or None)``.

    Raises:
        ValueError: No events, an unknown event type, or an empty ``weights``.
    """
    if not weights:
        msg = "weights must list at least one encoder weight, got ()"
        raise ValueError(msg)
    model, report = train_item_model(
        events,
        catalog,
        params,
        seed,
        progress,
        now=now,
        validation=validation,
        validation_fraction=validation_fraction,
    )
    started = clock()
    ordered = events.sort_values("ts", kind="stable")
    sequences = user_sequences(ordered, model.index)
    if validation == "leave-last-out":
        train_part, held = holdout_last(sequences)
        before_targets = _without_validation_targets(ordered)
    else:  # the split the linear model was tuned on
        split = report.validation_split
        if split is None:  # pragma: no cover - train_item_model always reports its split
            msg = "the co-occurrence model reported no validation split"
            raise RuntimeError(msg)
        train_part, held = holdout_split(split, model.index)
        # Everything but the targets, as for leave-last-out (one-event sessions included).
        before_targets = ordered[~ordered["event_id"].isin(split.test["event_id"])]
    if not len(held.targets):
        logger.warning(
            "no validation targets (%s): no sequential encoder and no adaptation", validation
        )
        return model, report, None
    linear_val = report.validation_model
    if linear_val is None:  # pragma: no cover - validation targets imply a validation fit
        msg = "the co-occurrence model reported no validation fit"
        raise RuntimeError(msg)
    base = full_ranking(linear_val, model.item_ids)(
        [[model.item_ids[r] for r in h] for h in held.history], held.types
    )
    seq_report = None
    if sequence is not None:
        model, seq_report, base = _add_encoder(
            model, sequences, train_part, held, base, sequence, seed, progress,
            refit=refit, weights=weights,
            deadline=None if sequence_budget_s is None else clock() + sequence_budget_s,
            clock=clock,
        )  # fmt: skip
        seq_report = replace(seq_report, seconds=clock() - started)
    adapt = tune_adaptation(
        linear_val,
        model.item_ids,
        base,
        held,
        progress=None if progress is None else lambda d, t: progress("adaptation", d, t),
    )
    logger.info(
        "per-user adaptation: %s (validation NDCG@10 %.4f; off: %.4f)",
        adapt.chosen.as_dict() if adapt.chosen.enabled else "off",
        adapt.validation_ndcg,
        adapt.scores[0][1],
    )
    if adapt.chosen.enabled:
        hyper = dict(model.hyperparameters) | {
            "adaptation_learning_rate": adapt.chosen.learning_rate,
            "adaptation_decay": adapt.chosen.decay,
        }
        metrics = dict(model.metrics) | {
            "validation_ndcg@10_with_adaptation": adapt.validation_ndcg
        }
        model = replace(model, adaptation=adapt.chosen, hyperparameters=hyper, metrics=metrics)
        base = base + adapt.added
    if rank:
        if progress is not None:
            progress("ranker", 0, 1)
        trend = _trending_rows(before_targets, model.index)
        model = _add_ranker(model, base, held, train_part, sequences, trend, seed)
        if progress is not None:
            progress("ranker", 1, 1)
    return replace(model, version=_version_of(model)), report, seq_report


def _add_ranker(
    model: ItemModel,
    base: npt.NDArray[np.floating],
    validation: ValidationSet,
    train_part: Sequences,
    sequences: Sequences,
    trending: Sequence[int],
    seed: int,
) -> ItemModel:
    """Train the second-stage ranker on the validation users (features from the models
    fitted without their held-out events, ``trending`` rows as of the end of the events
    before them) and keep it if it beats the model's order on held-out users; its
    co-occurrence table is then rebuilt from all events."""
    table = CoTable.build(list(zip(train_part.rows, train_part.types, strict=True)), model.n_items)
    settings = RankerSettings()
    features, targets = [], []
    for u, history in enumerate(validation.history):
        cands, found = ranker_inputs(
            model, base[u], [model.item_ids[r] for r in history.tolist()], table, settings, trending
        )
        features.append(found)
        hit = np.nonzero(cands == validation.targets[u])[0]
        targets.append(int(hit[0]) if len(hit) else -1)
    ranker, report = train_ranker(features, targets, settings=settings, seed=seed)
    logger.info(
        "second-stage ranker: %s (held-out validation NDCG@10 %.4f vs the model's order %.4f; "
        "targets among the candidates: %.1f%%)",
        "used" if ranker is not None else "not used",
        report.ranker_ndcg,
        report.base_ndcg,
        100 * report.reachable,
    )
    metrics = dict(model.metrics) | {
        "validation_ndcg@10_ranker_heldout": report.ranker_ndcg,
        "validation_ndcg@10_base_heldout": report.base_ndcg,
    }
    if ranker is None:
        return replace(model, metrics=metrics)
    full = CoTable.build(list(zip(sequences.rows, sequences.types, strict=True)), model.n_items)
    hyper = dict(model.hyperparameters) | {f"ranker_{k}": v for k, v in report.weights.items()}
    return replace(model, ranker=ranker, cotable=full, metrics=metrics, hyperparameters=hyper)


def _without_validation_targets(ordered: pd.DataFrame) -> pd.DataFrame:
    """The time-ordered events without each 2+-event user's last one (the validation
    targets of :func:`holdout_last`)."""
    by_user = ordered.groupby("user_id", sort=False)
    last = by_user.cumcount(ascending=False) == 0
    return ordered[~(last & (by_user["item_id"].transform("size") >= 2))]


def trending_stats_at_end(events: pd.DataFrame) -> dict[str, TrendingItem]:
    """The trending items at the end of an event log, with the worker's default trending
    settings, as the online counter would report them then."""
    if events.empty:
        return {}
    return trending_in_log(
        events["item_id"].astype(str).tolist(),
        events["ts"].astype(np.int64).tolist(),
        int(events["ts"].max()),
        TrendParams(),
    )


def trending_at_end(events: pd.DataFrame) -> list[str]:
    """The items trending at the end of an event log (best first): what the ranker's
    trending source sees offline."""
    found = trending_stats_at_end(events)
    return [t.item_id for t in sorted(found.values(), key=lambda t: t.rank)]


def _trending_rows(events: pd.DataFrame, index: Mapping[str, int]) -> list[int]:
    return [index[i] for i in trending_at_end(events) if i in index]


def _version_of(model: ItemModel) -> str:
    return make_version(model.created_at, *model.content_parts())


def _add_encoder(
    model: ItemModel,
    sequences: Sequences,
    train_part: Sequences,
    validation: ValidationSet,
    lin: npt.NDArray[np.float32],
    sequence: SequenceParams,
    seed: int,
    progress: Progress | None,
    *,
    refit: bool,
    weights: Sequence[float],
    deadline: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ItemModel, SequenceReport, npt.NDArray[np.float32]]:
    """Train the encoder, choose its weight next to ``lin`` (the linear validation scores)
    and refit it; returns the model (hybrid unless weight 0 won), the report and the
    validation scores of the chosen blend."""

    def epoch_progress(epoch: int, total: int, score: float) -> None:
        if progress is not None:
            progress("sequence: epochs", epoch, total)

    started = clock()
    trained = train_sequences(
        train_part, model.n_items, sequence, seed, validation=validation,
        progress=epoch_progress, deadline=deadline, clock=clock,
    )  # fmt: skip
    epoch_s = (clock() - started) / max(trained.epochs_run, 1)
    seq = (
        trained.encoder.encode([h.tolist() for h in validation.history], validation.types)
        @ trained.encoder.item_vectors().T
    )
    scored = [
        (float(w), heldout_ndcg(lin + np.float32(w) * seq, validation.history, validation.targets))
        for w in weights
    ]
    best_weight = max(scored, key=lambda ws: ws[1])[0]
    logger.info(
        "sequence encoder: best epoch %d, weight %g (validation NDCG@10 %s)",
        trained.best_epoch,
        best_weight,
        ", ".join(f"{w:g}: {s:.4f}" for w, s in scored),
    )
    final: TrainedEncoder = trained
    if refit and deadline is not None and clock() + epoch_s * trained.best_epoch > deadline:
        logger.info(
            "no refit: %d epoch(s) of about %.0f s would pass the time budget; the encoder "
            "trained without the validation targets is kept",
            trained.best_epoch,
            epoch_s,
        )
        refit = False
    if best_weight > 0 and refit:
        final = train_sequences(
            sequences,
            model.n_items,
            sequence,
            seed,
            epochs=trained.best_epoch,
            progress=lambda e, t, s: progress("sequence: refit", e, t) if progress else None,
        )
    seq_report = SequenceReport(
        params=sequence,
        best_epoch=trained.best_epoch,
        epochs_run=trained.epochs_run,
        curve=tuple(trained.curve),
        weight=best_weight,
        weight_scores=tuple(scored),
        refit=refit and best_weight > 0,
    )
    if best_weight == 0:
        return model, seq_report, lin
    hyper = dict(model.hyperparameters) | {
        "sequence_weight": best_weight,
        "sequence_epochs": float(trained.best_epoch),
    }
    metrics = dict(model.metrics) | {"validation_ndcg@10_with_sequence": seq_report.validation_ndcg}
    hybrid = replace(
        model,
        encoder=final.encoder,
        sequence_weight=best_weight,
        hyperparameters=hyper,
        metrics=metrics,
    )
    blend = (lin + np.float32(best_weight) * seq).astype(np.float32)
    return replace(hybrid, version=_version_of(hybrid)), seq_report, blend
