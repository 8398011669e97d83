"""Training the served model: co-occurrence item vectors plus a sequential user encoder.

1. :func:`engine.training.train_item_model` learns the item vectors (tuned on validation,
   refit on all events): the linear part, which also drives reasons and cold start.
2. The sequential encoder (:mod:`engine.sequential`) trains on every user's events but the
   last, with early stopping on that held-out last event (the same validation split).
3. The weight of the encoder's score is chosen on that validation split, against the
   linear part fitted on the validation training events at the chosen settings (the fit
   the linear model's own tuning already made). Weight 0
   (encoder off) is one of the candidates, so the encoder is only used when it helps.
4. The encoder is refit on all events for the best epoch count (``refit=True``).

The result is one :class:`engine.model.ItemModel` whose index vectors are
``[item vector, weight * encoder item embedding]``: serving stays one inner-product search.

Example:
    >>> model, report = train_model(events, catalog, TrainParams(), SequenceParams(), seed=0)
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd

from engine.model import ItemModel, make_version
from engine.sequential import SequenceParams
from engine.sequential_training import (
    TrainedEncoder,
    heldout_ndcg,
    holdout_last,
    train_sequences,
    user_sequences,
)
from engine.training import Progress, TrainParams, TrainReport, train_item_model

__all__ = ["SEQUENCE_WEIGHTS", "SequenceReport", "train_model"]

logger = logging.getLogger(__name__)

#: Weights of the encoder's score tried on validation (0: linear part only).
SEQUENCE_WEIGHTS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 100.0)


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
    now: datetime | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ItemModel, TrainReport, SequenceReport | None]:
    """Train the linear model and, unless ``sequence`` is None, the sequential encoder.

    Args:
        events: Training events (event schema).
        catalog: Item catalog, or None.
        params: The linear model's grid and settings.
        sequence: The encoder's settings, or None for the linear model alone.
        seed: Seeds every step; equal seeds and inputs give identical models.
        progress: Called as ``progress(stage, done, total)``.
        refit: Refit the encoder on all events for the best epoch count.
        weights: Encoder score weights to try on validation.
        now: Creation time for the version (default: the last event's time).
        clock: Monotonic seconds.

    Returns:
        ``(model, linear report, sequence report or None)``.

    Raises:
        ValueError: No events, an unknown event type, or an empty ``weights``.
    """
    if not weights:
        msg = "weights must list at least one encoder weight, got ()"
        raise ValueError(msg)
    model, report = train_item_model(events, catalog, params, seed, progress, now=now)
    if sequence is None:
        return model, report, None
    started = clock()
    ordered = events.sort_values("ts", kind="stable")
    sequences = user_sequences(ordered, model.index)
    train_part, validation = holdout_last(sequences)
    if not len(validation.targets):
        logger.warning("no user has 2+ events: the sequential encoder is not used")
        return model, report, None

    def epoch_progress(epoch: int, total: int, score: float) -> None:
        if progress is not None:
            progress("sequence: epochs", epoch, total)

    trained = train_sequences(
        train_part, model.n_items, sequence, seed, validation=validation, progress=epoch_progress
    )
    linear_val = report.validation_model
    if linear_val is None:  # pragma: no cover - validation targets imply a validation fit
        msg = "the co-occurrence model reported no validation fit"
        raise RuntimeError(msg)
    lin = linear_val.recommender(model.item_ids)(
        [[model.item_ids[r] for r in h] for h in validation.history], validation.types
    )
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
        seconds=clock() - started,
    )
    if best_weight == 0:
        return model, report, seq_report
    hyper = dict(model.hyperparameters) | {
        "sequence_weight": best_weight,
        "sequence_epochs": float(trained.best_epoch),
    }
    metrics = dict(model.metrics) | {"validation_ndcg@10_with_sequence": seq_report.validation_ndcg}
    version = make_version(
        model.created_at,
        model.item_ids,
        model.vectors,
        model.popularity,
        model.user_params,
        model.scoring,
        model.content,
        (final.encoder, best_weight),
    )
    hybrid = replace(
        model,
        version=version,
        encoder=final.encoder,
        sequence_weight=best_weight,
        hyperparameters=hyper,
        metrics=metrics,
    )
    return hybrid, report, seq_report
