"""Training the sequential encoder: next-item prediction with early stopping on validation.

Every user's training events, oldest first, become windows of at most ``max_len`` inputs;
the target at each position is the next event's item, so one window trains up to
``max_len`` predictions at once (causal attention). The newest window of a user always
ends at their last event; older windows start at a random offset each epoch.

Loss: softmax cross-entropy of the target against all items (``negatives == 0``), or,
for large catalogs, a sampled softmax whose candidates are the batch's own targets
(in-batch negatives) plus ``negatives`` uniformly drawn items.

Early stopping: after each epoch the encoder ranks all items for each validation user
(their held-out item against everything, already-seen items excluded) and the epoch with
the best NDCG@10 is kept; training stops after ``patience`` epochs without a gain.

Example:
    >>> result = train_sequences(sequences, n_items, SequenceParams(), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch.nn import functional as F  # noqa: N812 - torch convention

from streamrec.engine.offline.evaluation import Split
from streamrec.engine.serving.sequential import (
    SequenceEncoder,
    SequenceParams,
    pad_left,
    type_codes,
)

__all__ = [
    "Sequences",
    "TrainedEncoder",
    "ValidationSet",
    "holdout_last",
    "holdout_split",
    "train_sequences",
    "user_sequences",
]

logger = logging.getLogger(__name__)

EpochProgress = Callable[[int, int, float], None]


@dataclass(frozen=True, eq=False)
class Sequences:
    """Per-user event sequences as model rows and event types, oldest first."""

    rows: list[npt.NDArray[np.int64]]
    types: list[list[str]]


def user_sequences(events: pd.DataFrame, index: dict[str, int]) -> Sequences:
    """Group a time-ordered event table by user; events on unknown items are dropped.

    Args:
        events: Events with ``user_id``, ``item_id``, ``type``, in time order.
        index: Row of each known item id.

    Returns:
        One sequence per user (in order of first appearance).
    """
    rows: list[npt.NDArray[np.int64]] = []
    types: list[list[str]] = []
    frame = events[["user_id", "item_id", "type"]].astype(str)
    codes = frame["item_id"].map(index)
    known = codes.notna()
    frame = frame[known].assign(row=codes[known].astype(np.int64))
    for _, group in frame.groupby("user_id", sort=False):
        rows.append(group["row"].to_numpy(dtype=np.int64))
        types.append(group["type"].tolist())
    return Sequences(rows=rows, types=types)


@dataclass(frozen=True, eq=False)
class ValidationSet:
    """Users whose held-out next item the encoder must rank first.

    Attributes:
        history: Each user's rows, oldest first (also excluded from the ranking).
        types: Matching event types.
        targets: (u,) each user's held-out row.
    """

    history: list[npt.NDArray[np.int64]]
    types: list[list[str]]
    targets: npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class TrainedEncoder:
    """The encoder of the best epoch and how training went.

    Attributes:
        encoder: The encoder.
        best_epoch: 1-based epoch kept (the last one without validation).
        epochs_run: Epochs trained.
        curve: (epoch, training loss, validation NDCG@10 or NaN) per epoch.
    """

    encoder: SequenceEncoder
    best_epoch: int
    epochs_run: int
    curve: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def best_validation_ndcg(self) -> float:
        """The kept epoch's validation NDCG@10 (NaN without validation)."""
        return self.curve[self.best_epoch - 1][2] if self.curve else math.nan


def _windows(
    seqs: Sequences, max_len: int, rng: np.random.Generator
) -> tuple[list[list[int]], list[list[str]], list[list[int]]]:
    inputs: list[list[int]] = []
    kinds: list[list[str]] = []
    targets: list[list[int]] = []
    for rows, types in zip(seqs.rows, seqs.types, strict=True):
        m = len(rows) - 1
        if m < 1:
            continue
        ends = [m]
        end = m - int(rng.integers(1, max_len + 1))
        while end > 0:
            ends.append(end)
            end -= max_len
        for end in ends:
            start = max(0, end - max_len)
            inputs.append((rows[start:end] + 1).tolist())
            kinds.append(types[start:end])
            targets.append((rows[start + 1 : end + 1] + 1).tolist())
    return inputs, kinds, targets


def _loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    negatives: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean cross-entropy over non-padding positions; ``targets`` are codes (0 = pad)."""
    mask = targets > 0
    h = hidden[mask]
    t = targets[mask] - 1
    n_items = table.shape[0]
    if negatives == 0 or negatives >= n_items:
        return F.cross_entropy(h @ table.T, t)
    sampled = torch.randint(0, n_items, (negatives,), generator=generator)
    candidates, inverse = torch.unique(torch.cat([t, sampled]), return_inverse=True)
    return F.cross_entropy(h @ table[candidates].T, inverse[: t.shape[0]])


def heldout_ndcg(
    scores: npt.NDArray[np.floating],
    seen: list[npt.NDArray[np.int64]],
    targets: npt.NDArray[np.int64],
    k: int = 10,
) -> float:
    """Mean NDCG@k of each user's held-out column, their ``seen`` columns excluded.

    Args:
        scores: (u, n) scores.
        seen: Per user, the columns to exclude (their history).
        targets: (u,) each user's held-out column.
        k: The cut-off.

    Returns:
        The mean over users (NaN for none); an excluded or -inf target counts 0.
    """
    masked = scores.astype(np.float64, copy=True)
    for u, cols in enumerate(seen):
        masked[u, cols] = -np.inf
    target = masked[np.arange(len(masked)), targets]
    rank = (masked > target[:, None]).sum(axis=1)
    gains = np.where((rank < k) & np.isfinite(target), 1.0 / np.log2(rank + 2.0), 0.0)
    return float(gains.mean()) if gains.size else math.nan


def validation_ndcg(encoder: SequenceEncoder, validation: ValidationSet, k: int = 10) -> float:
    """Mean NDCG@k of the held-out rows over all items, history excluded."""
    users = encoder.encode([h.tolist() for h in validation.history], validation.types)
    scores = users @ encoder.item_vectors().T
    return heldout_ndcg(scores, validation.history, validation.targets, k)


def train_sequences(
    sequences: Sequences,
    n_items: int,
    params: SequenceParams,
    seed: int,
    *,
    validation: ValidationSet | None = None,
    epochs: int | None = None,
    progress: EpochProgress | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainedEncoder:
    """Train an encoder on ``sequences``.

    With ``validation``, training stops early and the best epoch is kept; without it,
    exactly ``epochs`` (default ``params.max_epochs``) epochs run. With a ``deadline``
    (``clock`` seconds), no epoch starts after it (at least one runs), and the best epoch
    so far is kept.

    Args:
        sequences: Training sequences (rows in ``[0, n_items)``).
        n_items: Items in the model.
        params: Shape and training settings.
        seed: Seeds initialisation, window offsets, dropout and negative sampling.
        validation: Held-out next items for early stopping, or None.
        epochs: Epoch count when there is no validation.
        progress: Called as ``progress(epoch, max_epochs, validation_ndcg)``.
        deadline: When to stop starting epochs, in ``clock`` seconds (None: no limit).
        clock: Monotonic seconds.

    Returns:
        The trained encoder and its learning curve.
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    encoder = SequenceEncoder.create(n_items, params, seed)
    net = encoder.net
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    max_epochs = params.max_epochs if validation is not None or epochs is None else epochs
    best = (-math.inf, 0, copy.deepcopy(net.state_dict()))
    curve: list[tuple[int, float, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, max_epochs + 1):
            if deadline is not None and epoch > 1 and clock() >= deadline:
                logger.info("time budget reached after %d epoch(s)", epoch - 1)
                break
            inputs, kinds, targets = _windows(sequences, params.max_len, rng)
            order = rng.permutation(len(inputs))
            net.train()
            total, batches = 0.0, 0
            for start in range(0, len(order), params.batch_size):
                pick = order[start : start + params.batch_size]
                x = torch.from_numpy(pad_left([inputs[i] for i in pick], params.max_len))
                k = torch.from_numpy(pad_left([type_codes(kinds[i]) for i in pick], params.max_len))
                y = torch.from_numpy(pad_left([targets[i] for i in pick], params.max_len))
                loss = _loss(net(x, k), y, net.item_table(), params.negatives, generator)
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += float(loss.detach())
                batches += 1
            net.eval()
            score = math.nan if validation is None else validation_ndcg(encoder, validation)
            curve.append((epoch, total / max(batches, 1), score))
            logger.debug("epoch %d: loss %.4f, validation NDCG@10 %.4f", epoch, *curve[-1][1:])
            if progress is not None:
                progress(epoch, max_epochs, score)
            if validation is None:
                best = (0.0, epoch, best[2])
                continue
            if score > best[0]:
                best = (score, epoch, copy.deepcopy(net.state_dict()))
            elif epoch - best[1] >= params.patience:
                break
    if validation is not None:
        net.load_state_dict(best[2])
    net.eval()
    return TrainedEncoder(encoder=encoder, best_epoch=best[1], epochs_run=len(curve), curve=curve)


def holdout_last(sequences: Sequences) -> tuple[Sequences, ValidationSet]:
    """Each user's last event becomes their validation target (users with >= 2 events).

    Returns:
        ``(training sequences, validation set)``.
    """
    train_rows: list[npt.NDArray[np.int64]] = []
    train_types: list[list[str]] = []
    history: list[npt.NDArray[np.int64]] = []
    hist_types: list[list[str]] = []
    targets: list[int] = []
    for rows, types in zip(sequences.rows, sequences.types, strict=True):
        if len(rows) < 2:
            train_rows.append(rows)
            train_types.append(types)
            continue
        train_rows.append(rows[:-1])
        train_types.append(types[:-1])
        history.append(rows[:-1])
        hist_types.append(types[:-1])
        targets.append(int(rows[-1]))
    return (
        Sequences(rows=train_rows, types=train_types),
        ValidationSet(history, hist_types, np.asarray(targets, dtype=np.int64)),
    )


def holdout_split(split: Split, index: dict[str, int]) -> tuple[Sequences, ValidationSet]:
    """The sequences of a split's training part, and its test users as a validation set.

    Each test user's history is what the split gives them (training events, then context
    events: for a session split, the session's earlier events, never trained on); their
    target is their test event. Every item must be in ``index``.

    Returns:
        ``(training sequences, validation set)``, the validation users in test order.

    Raises:
        KeyError: An item of the split is not in ``index``.
    """
    items, types = split.histories()
    history = [np.asarray([index[i] for i in h], dtype=np.int64) for h in items]
    targets = np.asarray([index[str(i)] for i in split.test["item_id"]], dtype=np.int64)
    return user_sequences(split.train, index), ValidationSet(history, types, targets)
