"""``streamrec evaluate``: our model and strong baselines on one split, full ranking.

1. Split the log: leave-last-out (each user's last event is the target) or a global time
   cut (each user's first event after it), :mod:`streamrec.engine.offline.evaluation`.
2. The item universe is every item of the log and of the catalog: each target is ranked
   against all of them, never against sampled negatives; the user's training items are
   excluded.
3. Every model sees only the training part. Hyperparameters are chosen on one validation
   split for all models, ours included: ``leave_last_out(train)``, each user's last
   training event held out (this is what :func:`streamrec.engine.offline.training.train_item_model`
   does).
   The chosen point is then refit on the whole training part.
4. Ours is scored on what the worker serves (:func:`streamrec.engine.offline.served.served_ranking`:
   its candidates, filters, fill and ranker, lists of 20), so any filter's cost shows up.
5. Test metrics per model: Recall/NDCG@10,20, MRR@20 (mean ± 95% CI), coverage, ILD@10
   in our model's item-vector space and novelty@10 (:mod:`streamrec.engine.offline.list_metrics`),
   and the
   paired difference of NDCG@10 to ours over the same users (mean ± 95% CI).

Example:
    >>> report = run_evaluation(events, None, "leave-last-out", 42)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.als import ALSRecommender, BaselineUnavailableError, load_implicit
from streamrec.engine.offline.baselines import (
    EASERecommender,
    ItemKNNRecommender,
    RecentPopularityRecommender,
)
from streamrec.engine.offline.evaluation import (
    EvalResult,
    MetricEstimate,
    PopularityRecommender,
    Recommender,
    Split,
    evaluate_full_ranking,
    leave_last_out,
    session_split,
    time_split,
)
from streamrec.engine.offline.evaluation_report import EvaluationReport, ModelResult
from streamrec.engine.offline.hybrid_training import train_model
from streamrec.engine.offline.list_metrics import intra_list_diversity, ndcg_per_user, novelty
from streamrec.engine.offline.recbole_sasrec import DEFAULT_SASREC, RecBoleSASRec, load_recbole
from streamrec.engine.offline.score_cache import CachedScores, cache_key, load_scores, save_scores
from streamrec.engine.offline.served import served_ranking
from streamrec.engine.offline.training import Progress, TrainParams
from streamrec.engine.serving.sequential import SequenceParams
from streamrec.engine.serving.user_embedding import EventWeights

__all__ = ["MODEL_NAMES", "BaselineGrids", "Tuned", "run_evaluation", "tune"]

logger = logging.getLogger(__name__)

#: Every model ``run_evaluation`` knows, in report order.
MODEL_NAMES: tuple[str, ...] = (
    "ours",
    "popular",
    "popular-7d",
    "item-knn",
    "ease",
    "als",
    "sasrec",
)
ProtocolName = Literal["leave-last-out", "time", "session"]
Params = Mapping[str, float | str]
LIST_LENGTH = 10
#: Our model is scored on the worker's lists of this length: the largest cut-off (@20).
SERVED_LENGTH = 20


@dataclass(frozen=True)
class BaselineGrids:
    """What is tried on validation for each tuned baseline.

    ``weightings`` is tried for every matrix model: ``"binary"`` X or ``"event"`` weights.

    Attributes:
        weightings: Values of X to try, ``"binary"`` and/or ``"event"``.
        event_weights: The weights of ``"event"`` (the same as our model's by default).
        knn_neighbours: Neighbours k kept per item.
        ease_lambdas: L2 penalties λ.
        als_factors: Latent dimensions.
        als_regularizations: L2 penalties.
        als_iterations: ALS sweeps.
        als_alphas: Confidence scales.
        recent_window_days: Window of ``popular-7d``.
        ease_max_items: Larger universes skip EASE (an (n, n) inverse).
        sasrec: Overrides of RecBole's SASRec settings
            (:data:`streamrec.engine.offline.recbole_sasrec.DEFAULT_SASREC`).
        sasrec_max_seconds: Training time budget of SASRec (None: until early stopping).
        sasrec_threads: torch threads while SASRec trains (None: torch's default).
    """

    weightings: tuple[str, ...] = ("binary", "event")
    event_weights: EventWeights = field(default_factory=EventWeights)
    knn_neighbours: tuple[int, ...] = (20, 50, 100, 200)
    ease_lambdas: tuple[float, ...] = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    als_factors: tuple[int, ...] = (16, 32, 64, 128)
    als_regularizations: tuple[float, ...] = (0.01, 0.1, 1.0)
    als_iterations: tuple[int, ...] = (15, 30)
    als_alphas: tuple[float, ...] = (1.0, 10.0)
    recent_window_days: float = 7.0
    ease_max_items: int = 20_000
    sasrec: Mapping[str, Any] = field(default_factory=dict)
    sasrec_max_seconds: float | None = None
    sasrec_threads: int | None = None

    def weights(self, params: Params) -> EventWeights | None:
        """The X weights a grid point asks for (None: binary)."""
        return None if params["weighting"] == "binary" else self.event_weights


def _grid(**axes: Sequence[float | str]) -> list[dict[str, float | str]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Tuned:
    """The grid point with the best validation score, and the score."""

    params: Params
    score: float
    n_points: int


def tune(
    build: Callable[[Params], Recommender],
    grid: Sequence[Params],
    validation: Split,
    item_ids: Sequence[str],
    *,
    metric: str = "ndcg@10",
    progress: Callable[[int, int], None] | None = None,
) -> Tuned:
    """Fit every grid point on the validation training part; keep the best (first on ties).

    Args:
        build: Fits a recommender on the validation training events for a grid point.
        grid: The grid points, in search order.
        validation: The validation split.
        item_ids: The ranked universe.
        metric: Selection metric of
            :func:`streamrec.engine.offline.evaluation.evaluate_full_ranking`.
        progress: Called as ``progress(done, total)`` after each point.

    Returns:
        The chosen point; the first with a NaN score when no user can be validated.
    """
    if not grid:
        msg = "grid must hold at least one point, got none"
        raise ValueError(msg)
    if validation.test.empty:
        logger.warning("no validation users: using the first grid point %s", grid[0])
        return Tuned(grid[0], float("nan"), 0)
    best: tuple[float, Params] | None = None
    for done, point in enumerate(grid, start=1):
        score = evaluate_full_ranking(build(point), validation, item_ids)[metric].mean
        if best is None or score > best[0]:
            best = (score, point)
        if progress is not None:
            progress(done, len(grid))
    assert best is not None  # noqa: S101 - the grid is not empty
    return Tuned(best[1], best[0], len(grid))


def _baselines(
    grids: BaselineGrids, universe: Sequence[str], seed: int
) -> dict[str, tuple[list[dict[str, float | str]], Callable[[pd.DataFrame, Params], Recommender]]]:
    def num(p: Params, key: str) -> float:
        return float(p[key])

    w = grids.weightings
    return {
        "popular": ([{}], lambda ev, p: PopularityRecommender.fit(ev, universe)),
        "popular-7d": (
            [{"window_days": grids.recent_window_days}],
            lambda ev, p: RecentPopularityRecommender.fit(ev, universe, num(p, "window_days")),
        ),
        "item-knn": (
            _grid(weighting=w, k=grids.knn_neighbours),
            lambda ev, p: ItemKNNRecommender.fit(ev, universe, int(num(p, "k")), grids.weights(p)),
        ),
        "ease": (
            _grid(weighting=w, lam=grids.ease_lambdas),
            lambda ev, p: EASERecommender.fit(
                ev, universe, num(p, "lam"), grids.weights(p), grids.ease_max_items
            ),
        ),
        "als": (
            _grid(
                weighting=w,
                factors=grids.als_factors,
                regularization=grids.als_regularizations,
                iterations=grids.als_iterations,
                alpha=grids.als_alphas,
            ),
            lambda ev, p: ALSRecommender.fit(
                ev,
                universe,
                factors=int(num(p, "factors")),
                regularization=num(p, "regularization"),
                iterations=int(num(p, "iterations")),
                alpha=num(p, "alpha"),
                seed=seed,
                weights=grids.weights(p),
            ),
        ),
    }


def _unavailable(name: str, n_items: int, grids: BaselineGrids) -> str | None:
    if name == "als":
        try:
            load_implicit()
        except BaselineUnavailableError as exc:
            return str(exc)
    if name == "sasrec":
        try:
            load_recbole()
        except BaselineUnavailableError as exc:
            return str(exc)
    if name == "ease" and n_items > grids.ease_max_items:
        return f"{n_items} items exceed ease_max_items={grids.ease_max_items}"
    return None


def _paired(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> MetricEstimate:
    """Mean of ``a - b`` over the same users with its 95% normal CI half-width."""
    diff = a - b
    std = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return MetricEstimate(float(diff.mean()), 1.96 * std / math.sqrt(max(diff.size, 1)))


@dataclass(frozen=True, eq=False)
class _Fitted:
    recommender: Recommender
    chosen: Params
    validation_ndcg: float | None
    grid_size: int
    seconds: float = 0.0
    notes: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # kept with cached scores


def _fit_baseline(
    name: str,
    split: Split,
    validation: Split,
    universe: Sequence[str],
    grids: BaselineGrids,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> _Fitted:
    grid, fit = _baselines(grids, universe, seed)[name]
    if len(grid) == 1:
        return _Fitted(fit(split.train, grid[0]), grid[0], None, 0)
    tuned = tune(lambda p: fit(validation.train, p), grid, validation, universe, progress=progress)
    score = tuned.score if math.isfinite(tuned.score) else None
    return _Fitted(fit(split.train, tuned.params), tuned.params, score, tuned.n_points)


def _sasrec_settings(grids: BaselineGrids) -> dict[str, Any]:
    return {**DEFAULT_SASREC, **grids.sasrec}


def _fit_sasrec(
    split: Split,
    universe: Sequence[str],
    grids: BaselineGrids,
    seed: int,
    progress: Callable[[int, int], None] | None,
    checkpoint: Path | None,
) -> _Fitted:
    settings = _sasrec_settings(grids)
    model = RecBoleSASRec.fit(
        split,
        universe,
        seed,
        params=grids.sasrec,
        threads=grids.sasrec_threads,
        max_seconds=grids.sasrec_max_seconds,
        progress=progress,
        checkpoint=checkpoint,
    )
    best_epoch = 1 + int(np.argmax(model.validation_curve)) if model.validation_curve else 0
    if model.stopped_by_budget:
        stop = "the time budget"
    elif model.epochs_run >= int(settings["epochs"]):
        stop = "its epoch limit"
    else:
        stop = "early stopping"
    notes = (
        f"RecBole 1.2.1 SASRec, {model.epochs_run} epochs (stopped by {stop}), best validation "
        f"epoch {best_epoch}; RecBole's own test NDCG@10 "
        f"{model.recbole_test.get('ndcg@10', 0):.4f} "
        "(RecBole does not exclude seen items for sequential models)"
    )
    chosen: dict[str, float | str] = {
        k: settings[k] for k in ("hidden_size", "n_layers", "n_heads", "loss_type", "epochs")
    }
    chosen["epochs_run"] = model.epochs_run
    meta = {
        "validation_curve": list(model.validation_curve),
        "recbole_test": dict(model.recbole_test),
        "stopped_by_budget": model.stopped_by_budget,
    }
    return _Fitted(model, chosen, model.best_validation_ndcg, 0, notes=notes, meta=meta)


#: Bump when a change of code changes what a cached model would score: the baselines'
#: format, and ours (4: the ranker's candidates come from several sources; 5: ours is
#: scored on the worker's served lists).
CACHE_FORMAT = 2
OURS_CACHE_FORMAT = 5


def _cache_key(
    name: str,
    split: Split,
    universe: Sequence[str],
    catalog: pd.DataFrame | None,
    seed: int,
    train_params: TrainParams | None,
    sequence_params: SequenceParams | None,
    grids: BaselineGrids,
) -> str:
    """A key over everything that decides a model's scores (the baselines' grids are part
    of their fit code, hence of ``CACHE_FORMAT``)."""
    if name == "sasrec":
        # No time budget in the key: a budget-cut run is resumed from its checkpoint.
        return cache_key(name, split, universe, {**_sasrec_settings(grids), "seed": seed})
    catalog_digest = (
        ""
        if catalog is None
        else hashlib.blake2b(
            catalog.to_json(orient="records", default_handler=str).encode("utf-8"),
            digest_size=8,
        ).hexdigest()
    )
    fmt = OURS_CACHE_FORMAT if name == "ours" else CACHE_FORMAT
    params = {"format": fmt, "seed": seed, "catalog": catalog_digest}
    if name == "ours":
        params["train"] = _changed(TrainParams() if train_params is None else train_params)
        params["sequence"] = None if sequence_params is None else _changed(sequence_params)
        if split.kind == "session":
            params["validation"] = f"session {split.test_fraction:g}"
    return cache_key(name, split, universe, params)


def _checkpoint_path(cache_dir: Path | None, key: str) -> Path | None:
    """Where a resumable model (RecBole's SASRec) keeps its training checkpoint."""
    return None if cache_dir is None else cache_dir / f"{key}.checkpoint.pt"


def _resume_instead(name: str, hit: CachedScores, grids: BaselineGrids) -> bool:
    """A SASRec run cut by its time budget is trained on (from its checkpoint) unless this
    run's budget is 0, which asks for the scores saved so far."""
    return (
        name == "sasrec"
        and bool(hit.meta.get("stopped_by_budget"))
        and grids.sasrec_max_seconds != 0
    )


def _changed(params: TrainParams | SequenceParams) -> dict[str, Any]:
    """The settings that differ from their defaults: a setting added later with a default
    that keeps the old behaviour does not invalidate the cache (``CACHE_FORMAT`` is bumped
    when code changes what a model scores)."""
    defaults = asdict(type(params)())
    return {k: v for k, v in asdict(params).items() if v != defaults[k]}


def _from_cache(hit: CachedScores, key: str) -> _Fitted:
    meta = hit.meta
    note = f"scores read from the cache ({key})"
    return _Fitted(
        hit,
        meta.get("chosen", {}),
        meta.get("validation_ndcg"),
        int(meta.get("grid_size", 0)),
        seconds=float(meta.get("seconds", 0.0)),
        notes=f"{meta['notes']}; {note}" if meta.get("notes") else note,
    )


def _to_cache(
    fit: _Fitted,
    split: Split,
    universe: Sequence[str],
    cache_dir: Path,
    key: str,
    arrays: Mapping[str, npt.NDArray[np.float32]],
) -> _Fitted:
    meta = {
        **fit.meta,
        "chosen": dict(fit.chosen),
        "validation_ndcg": fit.validation_ndcg,
        "grid_size": fit.grid_size,
        "seconds": fit.seconds,
        "notes": fit.notes,
    }
    stored = save_scores(fit.recommender, split, universe, cache_dir, key, meta, arrays=arrays)
    return replace(fit, recommender=stored)


def run_evaluation(
    events: pd.DataFrame,
    catalog: pd.DataFrame | None,
    protocol: ProtocolName,
    seed: int,
    models: Sequence[str] = MODEL_NAMES,
    progress: Progress | None = None,
    *,
    test_fraction: float = 0.2,
    dataset: str = "events",
    train_params: TrainParams | None = None,
    sequence_params: SequenceParams | None = None,
    grids: BaselineGrids | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cache_dir: Path | None = None,
    save_model: Path | None = None,
) -> EvaluationReport:
    """Split, tune and fit every model on the same training part, rank all items for each.

    Args:
        events: The whole event log (see :mod:`streamrec.engine.offline.datasets`).
        catalog: The catalog (adds catalog-only items to the universe; our model encodes
            them from their text), or None.
        protocol: ``"leave-last-out"``, ``"time"`` (a global time cut, users with events
            on both sides) or ``"session"`` (users are sessions: the sessions after a
            cut are tested on their last event, their earlier events are history).
        seed: Seeds our model and ALS.
        models: Names from :data:`MODEL_NAMES`, in report order.
        progress: Called as ``progress(stage, done, total)``.
        test_fraction: Share of events (``"time"``) or sessions (``"session"``) after
            the cut.
        dataset: Name for the report.
        train_params: Our model's grid (default
            :class:`streamrec.engine.offline.training.TrainParams`).
        sequence_params: Our sequential encoder's settings; None trains our
            co-occurrence model alone.
        grids: The baselines' grids (default :class:`BaselineGrids`).
        clock: Monotonic seconds, for the timings.
        cache_dir: Where each model's test scores are cached, keyed by the split, the
            universe, the catalog and the settings; a later run with the same key reads
            them back instead of training (None: always train).
        save_model: Save our trained model (and the catalog) into this folder, e.g. for
            ``streamrec evaluate --replay --model``.

    Returns:
        The report; unavailable models are in ``skipped`` (and logged as warnings).

    Raises:
        ValueError: An unknown model or protocol, or no test users.
    """
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        msg = f"models must be a non-empty subset of {', '.join(MODEL_NAMES)}, got {unknown}"
        raise ValueError(msg)
    if protocol not in ("leave-last-out", "time", "session"):
        msg = f"protocol must be 'leave-last-out', 'time' or 'session', got {protocol!r}"
        raise ValueError(msg)
    grids = BaselineGrids() if grids is None else grids
    started = clock()
    if protocol == "leave-last-out":
        split = leave_last_out(events)
    elif protocol == "session":
        split = session_split(events, test_fraction)
    else:
        split = time_split(events, test_fraction)
    if split.test.empty:
        msg = f"the {protocol} split of {len(events)} events has no test users"
        raise ValueError(msg)
    catalog_ids = catalog["item_id"].astype(str).tolist() if catalog is not None else []
    universe = sorted(set(split.item_ids()) | set(catalog_ids))
    # Sessions as users: validate as tested, on the last sessions of the training part.
    validation = split.validation() if protocol == "session" else leave_last_out(split.train)
    counts = PopularityRecommender.fit(split.train, universe).counts

    def stage(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    fitted: dict[str, _Fitted] = {}
    skipped: dict[str, str] = {}
    vectors: npt.NDArray[np.float32] | None = None
    for name in models:
        t0 = clock()
        key = None
        if cache_dir is not None:
            key = _cache_key(
                name, split, universe, catalog, seed, train_params, sequence_params, grids
            )
            hit = load_scores(cache_dir, key)
            if hit is not None and _resume_instead(name, hit, grids):
                logger.info("%s: cached run was cut by its time budget; resuming it", name)
            elif hit is not None:
                logger.info("%s: using cached scores %s in %s", name, key, cache_dir)
                fitted[name] = _from_cache(hit, key)
                if name == "ours":
                    vectors = hit.arrays["vectors"]
                continue
        if name == "ours":
            model, train_report, seq_report = train_model(
                split.train,
                catalog,
                TrainParams() if train_params is None else train_params,
                sequence_params,
                seed,
                None if progress is None else lambda s, d, t: progress(f"ours: {s}", d, t),
                # Sessions as users: validate as tested, on the last sessions by time.
                validation="session" if protocol == "session" else "leave-last-out",
                validation_fraction=test_fraction,
            )
            if save_model is not None:
                model.save(save_model)
                if catalog is not None:
                    catalog.to_parquet(save_model / "catalog.parquet")
            rows = model.rows(universe)
            vectors = np.where(rows[:, None] >= 0, model.vectors[rows], 0.0).astype(np.float32)
            val = train_report.validation
            chosen: dict[str, float | str] = dict(train_report.chosen.as_dict())
            notes: list[str] = []
            val_ndcg = None if val is None else val["ndcg@10"].mean
            if seq_report is not None:
                chosen |= {
                    "sequence_weight": seq_report.weight,
                    "sequence_epochs": seq_report.best_epoch,
                }
                val_ndcg = seq_report.validation_ndcg
                notes.append(
                    f"co-occurrence vectors + sequential encoder (weight {seq_report.weight:g}, "
                    f"best epoch {seq_report.best_epoch} of {seq_report.epochs_run}, "
                    f"{'refit on all training events' if seq_report.refit else 'not refit'}), "
                    f"model {model.version}"
                )
            if model.adaptation.enabled:
                chosen |= {
                    "adaptation_learning_rate": model.adaptation.learning_rate,
                    "adaptation_decay": model.adaptation.decay,
                }
                notes.append(
                    f"per-user adaptation (learning rate {model.adaptation.learning_rate:g}, "
                    f"decay {model.adaptation.decay:g})"
                )
                val_ndcg = model.metrics.get("validation_ndcg@10_with_adaptation", val_ndcg)
            else:
                chosen["adaptation_learning_rate"] = 0.0
            chosen["ranker"] = "used" if model.ranker is not None else "off"
            held_out = model.metrics.get("validation_ndcg@10_ranker_heldout")
            if held_out is not None and math.isfinite(held_out):
                notes.append(
                    f"second-stage ranker {'used' if model.ranker is not None else 'off'} "
                    f"(held-out validation NDCG@10 {held_out:.4f} vs "
                    f"{model.metrics.get('validation_ndcg@10_base_heldout', math.nan):.4f} "
                    "for the model's order)"
                )
            fitted[name] = _Fitted(
                # What the worker serves: its candidates, filters, fill and ranker.
                served_ranking(model, universe, catalog, split.train, SERVED_LENGTH),
                chosen,
                val_ndcg,
                len(train_report.grid),
                notes="; ".join(notes),
            )
        elif (reason := _unavailable(name, len(universe), grids)) is not None:
            logger.warning("skipping %s: %s", name, reason)
            skipped[name] = reason
            continue
        elif name == "sasrec":
            checkpoint = None if key is None else _checkpoint_path(cache_dir, key)
            fitted[name] = _fit_sasrec(
                split, universe, grids, seed, stage("sasrec: epochs"), checkpoint
            )
        else:
            fitted[name] = _fit_baseline(
                name, split, validation, universe, grids, seed, stage(f"{name}: tune")
            )
        fitted[name] = replace(fitted[name], seconds=clock() - t0)
        if cache_dir is not None and key is not None:
            fitted[name] = _to_cache(
                fitted[name],
                split,
                universe,
                cache_dir,
                key,
                {"vectors": vectors} if name == "ours" and vectors is not None else {},
            )

    index = {item: i for i, item in enumerate(universe)}
    targets = np.asarray([index[t] for t in split.test["item_id"].astype(str)], dtype=np.intp)
    evaluated: list[tuple[str, _Fitted, EvalResult, npt.NDArray[np.intp], float]] = []
    gains: dict[str, npt.NDArray[np.float64]] = {}
    for done, (name, fit) in enumerate(fitted.items(), start=1):
        t0 = clock()
        result = evaluate_full_ranking(fit.recommender, split, universe, keep_top=LIST_LENGTH)
        top = result.top_items
        assert top is not None  # noqa: S101 - keep_top > 0
        evaluated.append((name, fit, result, top, clock() - t0))
        gains[name] = ndcg_per_user(top, targets)
        if progress is not None:
            progress("evaluate", done, len(fitted))
    results = [
        ModelResult(
            name=name,
            result=result,
            diversity=None if vectors is None else intra_list_diversity(top, vectors),
            novelty=novelty(top, counts),
            chosen=fit.chosen,
            validation_ndcg=fit.validation_ndcg,
            grid_size=fit.grid_size,
            fit_seconds=fit.seconds,
            eval_seconds=eval_s,
            ndcg_vs_ours=None
            if name == "ours" or "ours" not in gains
            else _paired(gains[name], gains["ours"]),
            notes=fit.notes,
        )
        for name, fit, result, top, eval_s in evaluated
    ]
    return EvaluationReport(
        dataset=dataset,
        protocol=protocol,
        test_fraction=test_fraction if protocol in ("time", "session") else None,
        seed=seed,
        n_events=len(events),
        n_train_events=len(split.train),
        n_test_users=len(split.test),
        n_items=len(universe),
        results=tuple(results),
        skipped=skipped,
        wall_seconds=clock() - started,
    )
