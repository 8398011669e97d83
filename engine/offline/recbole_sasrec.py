"""SASRec as implemented by RecBole 1.2.1: a peer's model, run on our split as a baseline.

Nothing here re-implements SASRec: the model, its training loop and early stopping are
RecBole's (``recbole.model.sequential_recommender.SASRec``, ``recbole.trainer.Trainer``),
driven through RecBole's low-level API because ``recbole.quick_start`` imports ``ray``.
Optional: ``pip install '.[eval]'`` and ``pip install --no-deps recbole==1.2.1``.

How the split is handed over. RecBole gets the training events plus each test user's
target, as an atomic ``.inter`` file whose timestamp is the row's position in our time
order (so RecBole's ordering equals ours, ties included). Its own leave-one-out
(``LS: valid_and_test``) then trains on each user's training events but the last, stops
early on that last training event (which is exactly our validation target) and never
trains on the test target. We rank with RecBole's ``full_sort_predict`` over the user's
full training history, the way RecBole's own test step does, and score the lists with our
metrics, so every model is measured by the same code. RecBole's own test NDCG@10 is kept
as a cross-check of that hand-over.

Errors::

    BaselineUnavailableError (RuntimeError)   recbole or one of its dependencies is missing

Example:
    >>> sasrec = RecBoleSASRec.fit(split, universe, seed=0)  # doctest: +SKIP
    >>> evaluate_full_ranking(sasrec, split, universe)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.als import BaselineUnavailableError
from streamrec.engine.offline.evaluation import Split

__all__ = ["DEFAULT_SASREC", "RecBoleSASRec", "load_recbole"]

logger = logging.getLogger(__name__)

#: RecBole's SASRec defaults (hidden 64, 2 layers, 2 heads, full-softmax CE loss), with
#: its early stopping on validation NDCG@10.
DEFAULT_SASREC: Mapping[str, Any] = {
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "loss_type": "CE",
    "MAX_ITEM_LIST_LENGTH": 50,
    "learning_rate": 0.001,
    "train_batch_size": 2048,
    "epochs": 200,
    "stopping_step": 10,
}

_NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


@dataclass(frozen=True)
class _RecBole:
    config: Any
    create_dataset: Callable[..., Any]
    data_preparation: Callable[..., Any]
    model: Any
    trainer: Any
    interaction: Any
    init_seed: Callable[[int, bool], None]
    torch: ModuleType


def _save_checkpoint(lib: _RecBole, path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` with ``torch.save``, atomically (a crash leaves the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    lib.torch.save(dict(state), partial)
    os.replace(partial, path)


class _NoTensorBoard:
    """Stands in for RecBole's TensorBoard writer: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _BudgetSpent(Exception):  # noqa: N818 - control flow, never escapes this module
    """Raised from RecBole's epoch callback to end training at the time budget."""


@contextlib.contextmanager
def _quiet_peer_library() -> Iterator[None]:
    """RecBole reads ``sys.argv`` for its own ``--key=value`` options and warns through
    pandas and torch deprecations we cannot fix; hide our argv and those warnings."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        sys.argv = argv


def load_recbole() -> _RecBole:
    """RecBole's low-level API, imported on first use.

    RecBole 1.2.1's Config still uses NumPy 1 aliases (``np.float_`` …); they are added
    back to ``numpy`` first (the aliases NumPy 2 removed, pointing at the same types).

    Raises:
        BaselineUnavailableError: recbole or one of its dependencies is not installed.
    """
    for alias, target in _NUMPY_ALIASES.items():
        if not hasattr(np, alias):
            setattr(np, alias, getattr(np, target))
    try:
        config = importlib.import_module("recbole.config")
        data = importlib.import_module("recbole.data")
        interaction = importlib.import_module("recbole.data.interaction")
        models = importlib.import_module("recbole.model.sequential_recommender")
        trainer = importlib.import_module("recbole.trainer")
        utils = importlib.import_module("recbole.utils")
        torch = importlib.import_module("torch")
    except ImportError as exc:
        msg = (
            "the SASRec baseline needs RecBole: `pip install '.[eval]'` and "
            f"`pip install --no-deps recbole==1.2.1` ({exc})"
        )
        raise BaselineUnavailableError(msg) from exc
    return _RecBole(
        config=config.Config,
        create_dataset=data.create_dataset,
        data_preparation=data.data_preparation,
        model=models.SASRec,
        trainer=trainer.Trainer,
        interaction=interaction.Interaction,
        init_seed=utils.init_seed,
        torch=torch,
    )


def atomic_interactions(split: Split) -> pd.DataFrame:
    """The ``.inter`` table RecBole gets: training events, then each test target.

    ``timestamp:float`` is the row's rank in our time order, so RecBole's sort by time is
    our order exactly and each user's target comes after their training events.

    Args:
        split: The evaluation split.

    Returns:
        Columns ``user_id:token``, ``item_id:token``, ``timestamp:float``.
    """
    rows = pd.concat([split.train, split.test], ignore_index=True)
    return pd.DataFrame(
        {
            "user_id:token": rows["user_id"].astype(str),
            "item_id:token": rows["item_id"].astype(str),
            "timestamp:float": np.arange(len(rows), dtype=np.float64),
        }
    )


@dataclass(frozen=True, eq=False)
class RecBoleSASRec:
    """A trained RecBole SASRec that scores our universe for a batch of histories.

    Attributes:
        item_ids: The universe, in score-column order.
        columns: (n,) RecBole's internal id of each universe item (0: unknown to RecBole).
        epochs_run: Epochs trained before early stopping.
        best_validation_ndcg: RecBole's best validation NDCG@10.
        validation_curve: Validation NDCG@10 after each epoch.
        stopped_by_budget: Training was cut by ``max_seconds``, not by early stopping.
        recbole_test: RecBole's own test metrics on the same targets (cross-check).
    """

    item_ids: tuple[str, ...]
    columns: npt.NDArray[np.int64] = field(repr=False)
    epochs_run: int
    best_validation_ndcg: float
    validation_curve: tuple[float, ...]
    stopped_by_budget: bool
    recbole_test: Mapping[str, float]
    _model: Any = field(repr=False)
    _lib: _RecBole = field(repr=False)
    _token: Mapping[str, int] = field(repr=False)
    _max_len: int = 50

    @classmethod
    def fit(
        cls,
        split: Split,
        item_ids: Sequence[str],
        seed: int,
        *,
        params: Mapping[str, Any] | None = None,
        threads: int | None = None,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[int, int], None] | None = None,
        checkpoint: Path | None = None,
    ) -> RecBoleSASRec:
        """Train RecBole's SASRec on the split (see the module docstring).

        Args:
            split: The evaluation split (its test targets are never trained on).
            item_ids: The universe to score, in column order.
            seed: RecBole's seed (``reproducibility`` on).
            params: Overrides of :data:`DEFAULT_SASREC` (e.g. ``{"epochs": 30}``).
            threads: torch intra-op threads while training (None: unchanged).
            max_seconds: Training time budget: when an epoch ends past it, training stops
                and the best epoch so far is kept (``stopped_by_budget`` says so); 0 trains
                no epoch (with ``checkpoint``: scores the run saved so far).
            clock: Monotonic seconds, for the budget.
            progress: Called as ``progress(epoch, max_epochs)`` after each epoch.
            checkpoint: A file written after every epoch (model, optimizer, early-stopping
                counters, best epoch, random states) and, when it exists, resumed from:
                a run cut by ``max_seconds`` goes on where it stopped on the next call,
                exactly as one uninterrupted run would (tested). Only pass the same file
                for the same split, universe, settings and seed.

        Returns:
            The trained baseline.

        Raises:
            BaselineUnavailableError: RecBole is not installed.
        """
        lib = load_recbole()
        settings = {**DEFAULT_SASREC, **(params or {})}
        if checkpoint is not None:
            checkpoint = checkpoint.resolve()  # training runs in a temporary directory
        if threads is not None:
            lib.torch.set_num_threads(threads)
        with (
            tempfile.TemporaryDirectory(prefix="streamrec-recbole-") as tmp,
            _quiet_peer_library(),
        ):
            name = "streamrec-split"
            folder = Path(tmp) / name
            folder.mkdir()
            atomic_interactions(split).to_csv(folder / f"{name}.inter", sep="\t", index=False)
            config = lib.config(
                model="SASRec",
                dataset=name,
                config_dict={
                    **settings,
                    "data_path": tmp,
                    "USER_ID_FIELD": "user_id",
                    "ITEM_ID_FIELD": "item_id",
                    "TIME_FIELD": "timestamp",
                    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                    "eval_args": {
                        "split": {"LS": "valid_and_test"},
                        "order": "TO",
                        "group_by": "user",
                        "mode": "full",
                    },
                    "train_neg_sample_args": None,
                    "metrics": ["NDCG", "Recall"],
                    "topk": [10],
                    "valid_metric": "NDCG@10",
                    "seed": seed,
                    "reproducibility": True,
                    "device": "cpu",
                    "use_gpu": False,
                    "show_progress": False,
                    "save_dataset": False,
                    "save_dataloaders": False,
                    "log_wandb": False,
                },
            )
            # As RecBole's own quick start does: seed before the data and before the model.
            lib.init_seed(seed, True)
            dataset = lib.create_dataset(config)
            train, valid, test = lib.data_preparation(config, dataset)
            lib.init_seed(seed, True)
            model = lib.model(config, train.dataset).to("cpu")
            with contextlib.chdir(tmp):
                trainer = lib.trainer(config, model)
                # RecBole's TensorBoard writer appends from a thread to a path relative to
                # the working directory, which is no longer `tmp` by then (a flaky
                # FileNotFoundError in that thread); nothing here reads those logs.
                trainer.tensorboard.close()
            trainer.tensorboard = _NoTensorBoard()
            epochs = int(settings["epochs"])
            epochs_run = 0
            started = clock()
            curve: list[float] = []
            best_state: dict[str, Any] = {}
            if checkpoint is not None and checkpoint.exists():
                saved = lib.torch.load(checkpoint, weights_only=True)
                model.load_state_dict(saved["model"])
                trainer.optimizer.load_state_dict(saved["optimizer"])
                trainer.start_epoch = epochs_run = int(saved["epochs_run"])
                trainer.cur_step = int(saved["cur_step"])
                trainer.best_valid_score = float(saved["best_valid_score"])
                curve = [float(v) for v in saved["curve"]]
                best_state = dict(saved["best_state"])
                lib.torch.set_rng_state(saved["torch_rng"])
                train.generator.set_state(saved["loader_rng"])
                logger.info(
                    "RecBole SASRec: resuming after epoch %d from %s", epochs_run, checkpoint
                )
            # RecBole stops once more than `stopping_step` epochs brought no improvement.
            done_before = epochs_run >= epochs or trainer.cur_step > int(settings["stopping_step"])

            def after_epoch(epoch: int, valid_score: float) -> None:
                nonlocal epochs_run
                epochs_run = epoch + 1
                if not curve or valid_score > max(curve):
                    # Kept in memory: RecBole's own checkpoint needs torch.load with
                    # weights_only=False, which torch >= 2.6 refuses by default.
                    best_state.clear()
                    best_state.update(copy.deepcopy(model.state_dict()))
                curve.append(float(valid_score))
                if checkpoint is not None:
                    _save_checkpoint(
                        lib,
                        checkpoint,
                        {
                            "model": model.state_dict(),
                            "optimizer": trainer.optimizer.state_dict(),
                            "epochs_run": epochs_run,
                            "cur_step": trainer.cur_step,
                            "best_valid_score": float(trainer.best_valid_score),
                            "curve": list(curve),
                            "best_state": best_state,
                            "torch_rng": lib.torch.get_rng_state(),
                            "loader_rng": train.generator.get_state(),
                        },
                    )
                if progress is not None:
                    progress(epochs_run, epochs)
                if max_seconds is not None and clock() - started > max_seconds:
                    raise _BudgetSpent

            stopped_by_budget = not done_before and max_seconds is not None and max_seconds <= 0
            if not done_before and not stopped_by_budget:
                try:
                    # RecBole's Trainer may write other files under the working directory.
                    with contextlib.chdir(tmp):
                        trainer.fit(
                            train, valid, saved=False, show_progress=False, callback_fn=after_epoch
                        )
                except _BudgetSpent:
                    stopped_by_budget = True
            best_valid = trainer.best_valid_score
            if best_state:
                model.load_state_dict(best_state)
            recbole_test = trainer.evaluate(test, load_best_model=False, show_progress=False)
            model.eval()
            token = dict(dataset.field2token_id["item_id"])
            columns = np.asarray([token.get(str(i), 0) for i in item_ids], dtype=np.int64)
            logger.info(
                "RecBole SASRec: %d epochs, best validation NDCG@10 %.4f, its own test %s",
                epochs_run,
                best_valid,
                dict(recbole_test),
            )
            return cls(
                item_ids=tuple(str(i) for i in item_ids),
                columns=columns,
                epochs_run=epochs_run,
                validation_curve=tuple(curve),
                stopped_by_budget=stopped_by_budget,
                best_validation_ndcg=float(best_valid),
                recbole_test={str(k): float(v) for k, v in dict(recbole_test).items()},
                _model=model,
                _lib=lib,
                _token=token,
                _max_len=int(settings["MAX_ITEM_LIST_LENGTH"]),
            )

    def __call__(
        self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float64]:
        """(u, n) scores from RecBole's ``full_sort_predict`` over each user's last items.

        Items RecBole never saw score below every known item.
        """
        torch = self._lib.torch
        u = len(histories)
        seq = np.zeros((u, self._max_len), dtype=np.int64)
        lengths = np.ones(u, dtype=np.int64)
        for r, history in enumerate(histories):
            known = [self._token[i] for i in history if i in self._token][-self._max_len :]
            if known:
                seq[r, : len(known)] = known
                lengths[r] = len(known)
        batch = self._lib.interaction(
            {"item_id_list": torch.from_numpy(seq), "item_length": torch.from_numpy(lengths)}
        )
        with torch.no_grad():
            raw = self._model.full_sort_predict(batch).double().numpy()
        scores: npt.NDArray[np.float64] = raw[:, self.columns]
        floor = scores.min() - 1.0 if scores.size else 0.0
        scores[:, self.columns == 0] = floor
        return scores
