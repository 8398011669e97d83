"""Online replay evaluation: the real worker on a local broker, scored like offline.

1. Split the log (leave-last-out, or a time cut) exactly as ``streamrec evaluate`` does,
   and train our model on the training part with the same parameters.
2. Save it with its catalog and build its index as ``streamrec index build`` does.
3. Start a fresh Kafka broker and redis-server (deploy/local, state in a temporary folder),
   one ``streamrec worker`` process pointed at them and at the model, publish the catalog.
4. Produce the evaluated users' training events in time order, keyed by user; collect the
   list the worker published after each user's **last** training event (its
   ``trigger_event_id``), i.e. once the whole history is in Redis.
5. Score those lists against the held-out items with the offline formulas
   (:func:`streamrec.engine.offline.evaluation.metrics_from_ranks`), and score the same model
   offline
   (:func:`streamrec.engine.offline.evaluation.evaluate_full_ranking`) on the same users, in the
   same run.

The worker keeps each user's whole training history (``STREAMREC_HISTORY_LENGTH`` is the
longest one, unless set), so its seen-item exclusion is the offline one.
Everything started is stopped at the end, whatever happened
(:mod:`streamrec.stream.cli.live_replay`,
which also defines the errors, ``ReplayError`` and ``WorkerExitedError``).

Example:
    >>> report = run_replay_evaluation(events, catalog, seed=42, users_limit=300)  # doctest: +SKIP
    >>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrec.engine.offline.evaluation import (
    MetricEstimate,
    Split,
    evaluate_full_ranking,
    leave_last_out,
    metrics_from_ranks,
    session_split,
    time_split,
)
from streamrec.engine.offline.hybrid_training import SEQUENCE_WEIGHTS, train_model
from streamrec.engine.offline.list_metrics import ndcg_per_user
from streamrec.engine.offline.training import Progress, TrainParams
from streamrec.engine.serving.candidates import full_ranking
from streamrec.engine.serving.catalog import catalog_items
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.sequential import SequenceParams
from streamrec.engine.types import Item
from streamrec.index.build import build_index
from streamrec.stream.cli.live_replay import (
    ReplayError,
    WorkerExitedError,
    local_stack,
    replay_and_collect,
)
from streamrec.stream.cli.replay import clock
from streamrec.stream.cli.replay_report import ReplayReport
from streamrec.stream.settings import Settings

__all__ = ["ReplayError", "WorkerExitedError", "run_replay_evaluation"]

LIST_LENGTH = 20
KS = (10, 20)
#: Settings the replay itself decides; ``worker_settings`` may not change them.
FIXED_SETTINGS = frozenset(
    {"kafka_bootstrap", "redis_url", "model_dir", "metrics_port", "app_id"}
    | {"topic_events", "topic_items", "topic_recommendations", "topic_dlq"}
)
_MAX_HISTORY_SETTING = 10_000  # the upper bound of STREAMREC_HISTORY_LENGTH


def _universe(split: Split, catalog: pd.DataFrame | None) -> list[str]:
    ids = catalog["item_id"].astype(str).tolist() if catalog is not None else []
    return sorted(set(split.item_ids()) | set(ids))


def _sample(split: Split, users_limit: int | None, seed: int) -> Split:
    """The split restricted to a seeded sample of ``users_limit`` test users (or all)."""
    if users_limit is None or users_limit >= len(split.test):
        return split
    if users_limit < 1:
        msg = f"users_limit must be >= 1, got {users_limit}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(split.test), size=users_limit, replace=False))
    test = split.test.iloc[keep].reset_index(drop=True)
    return Split(split.train, test, split.kind, split.test_fraction, split.context)


def _items(catalog: pd.DataFrame | None, universe: Sequence[str]) -> list[Item]:
    """The catalog's items, plus a bare item for every logged item it lacks (else the
    worker would dead-letter their events, while offline they count)."""
    items = catalog_items(catalog) if catalog is not None else []
    known = {i.item_id for i in items}
    return items + [Item(i, i, "") for i in universe if i not in known]


def _worker_settings(
    overrides: Mapping[str, str], history_length: int, model_dir: Path
) -> dict[str, str]:
    bad = sorted(set(overrides) & FIXED_SETTINGS)
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if bad or unknown:
        msg = (
            "worker_settings must name Settings fields other than "
            f"{', '.join(sorted(FIXED_SETTINGS))}; got fixed {bad} and unknown {unknown}"
        )
        raise ValueError(msg)
    chosen = {
        "model_dir": str(model_dir),
        "metrics_port": "0",
        "app_id": "streamrec-replay",
        "num_recommendations": str(LIST_LENGTH),
        "history_length": str(history_length),
        "log_level": "WARNING",
        **overrides,
    }
    settings = Settings(**chosen)  # type: ignore[arg-type]  # validates the overrides
    if settings.num_recommendations < LIST_LENGTH:
        msg = f"num_recommendations must be >= {LIST_LENGTH}, got {settings.num_recommendations}"
        raise ValueError(msg)
    return chosen


def _paired(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> MetricEstimate:
    diff = a - b
    std = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return MetricEstimate(float(diff.mean()), 1.96 * std / math.sqrt(max(diff.size, 1)))


def run_replay_evaluation(
    events: pd.DataFrame,
    catalog: pd.DataFrame | None,
    *,
    protocol: Literal["leave-last-out", "time", "session"] = "leave-last-out",
    seed: int,
    users_limit: int | None = None,
    rate: float | None = None,
    progress: Progress | None = None,
    test_fraction: float = 0.2,
    dataset: str = "events",
    train_params: TrainParams | None = None,
    sequence_params: SequenceParams | None = None,
    sequence_weights: Sequence[float] = SEQUENCE_WEIGHTS,
    trained_model: Path | None = None,
    worker_settings: Mapping[str, str] | None = None,
    idle_timeout_s: float = 120.0,
    work_dir: Path | None = None,
) -> ReplayReport:
    """Replay the evaluated users' training events through a real worker; score its lists.

    Args:
        events: The whole event log (event schema, unique ``event_id``).
        catalog: The catalog (published to the worker, used by training), or None: every
            logged item is then published as a bare item.
        protocol: ``"leave-last-out"`` or ``"time"`` (the offline split).
        seed: Seeds training and the user sample.
        users_limit: Evaluate a seeded sample of this many test users (None: all).
        rate: Events per second to produce (None: as fast as possible).
        progress: Called as ``progress(stage, done, total)``.
        test_fraction: Share of events after the cut, for ``"time"``.
        dataset: Name for the report.
        train_params: Our model's grid (default
            :class:`streamrec.engine.offline.training.TrainParams`, as
            ``streamrec evaluate``).
        sequence_params: Our sequential encoder's settings (None: co-occurrence alone).
        sequence_weights: Encoder score weights tried on validation.
        trained_model: A model folder to serve instead of training one; it must have been
            trained on this split's training part (``streamrec evaluate --save-model``
            writes one), or the comparison means nothing.
        worker_settings: Extra worker settings by field name, e.g.
            ``{"near_duplicate_cosine": "2"}`` (``STREAMREC_NEAR_DUPLICATE_COSINE``); the
            addresses, topics and model folder are the replay's own.
        idle_timeout_s: Give up waiting for lists after this long without any.
        work_dir: Where the model, broker and Redis state go (None: a temporary folder,
            removed afterwards).

    Returns:
        The report (``machine`` left empty).

    Raises:
        ValueError: An unknown protocol or setting, no test users, or a bad ``users_limit``.
        ReplayError: The worker exited early.
        streamrec.stream.cli.local_infra.LocalInfraError: Kafka or Redis did not start.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if protocol == "leave-last-out":
        full = leave_last_out(events)
    elif protocol == "time":
        full = time_split(events, test_fraction)
    elif protocol == "session":
        full = session_split(events, test_fraction)
    else:
        msg = f"protocol must be 'leave-last-out', 'time' or 'session', got {protocol!r}"
        raise ValueError(msg)
    if full.test.empty:
        msg = f"the {protocol} split of {len(events)} events has no test users"
        raise ValueError(msg)
    split = _sample(full, users_limit, seed)
    universe = _universe(full, catalog)
    users = split.test["user_id"].astype(str).tolist()
    # Test users' history: their training events and, for sessions after the cut, the
    # session's earlier events (never trained on).
    seen = split.train if split.context is None else pd.concat([split.train, split.context])
    replayed = seen[seen["user_id"].astype(str).isin(set(users))]
    replayed = replayed.sort_values("ts", kind="stable").reset_index(drop=True)
    last_event = {
        str(row.event_id): str(row.user_id)
        for row in replayed.drop_duplicates("user_id", keep="last").itertuples()
    }
    longest = int(replayed.groupby("user_id").size().max())
    params = TrainParams() if train_params is None else train_params
    reads = max(params.max_history, 0 if sequence_params is None else sequence_params.max_len)
    history = max(reads, min(longest, _MAX_HISTORY_SETTING))

    own_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="streamrec-replay-")) if work_dir is None else work_dir
    model_dir = root / "model"
    try:
        chosen = _worker_settings(dict(worker_settings or {}), history, model_dir)  # fail early
        history = int(chosen["history_length"])
        t0 = time.perf_counter()
        if trained_model is not None:
            model = ItemModel.load(trained_model)
            chosen_params = dict(model.hyperparameters)
        else:
            model, train_report, _ = train_model(
                full.train,
                catalog,
                params,
                sequence_params,
                seed,
                None if progress is None else lambda s, d, t: progress(f"ours: {s}", d, t),
                weights=sequence_weights,
                validation="session" if protocol == "session" else "leave-last-out",
                validation_fraction=test_fraction,
            )
            chosen_params = dict(model.hyperparameters)
        timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        recommend = full_ranking(model, universe)
        offline = evaluate_full_ranking(recommend, split, universe, KS, keep_top=LIST_LENGTH)
        timings["offline"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        model.save(model_dir)
        if catalog is not None:
            catalog.to_parquet(model_dir / "catalog.parquet")
        build_index(model_dir)
        timings["index"] = time.perf_counter() - t0

        # The worker rejects events more than a day ahead of its clock: move a log from
        # the future back so its last event is a minute ago (order and gaps unchanged).
        ahead = int(replayed["ts"].max()) - clock()
        shift = ahead + 60_000 if ahead > 0 else 0
        if shift:
            replayed = replayed.assign(ts=replayed["ts"].astype("int64") - shift)
        t0 = time.perf_counter()
        with local_stack(root, chosen) as stack:
            timings["infrastructure"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            collected = asyncio.run(
                replay_and_collect(
                    stack,
                    _items(catalog, universe),
                    replayed,
                    last_event,
                    rate=rate,
                    progress=progress,
                    idle_timeout_s=idle_timeout_s,
                )
            )
            timings["replay"] = time.perf_counter() - t0
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)

    targets = split.test["item_id"].astype(str).tolist()
    published = [collected.lists.get(u) for u in users]
    ranks = np.full(len(users), len(universe), dtype=np.int64)
    for u, (items, target) in enumerate(zip(published, targets, strict=True)):
        if items is not None and target in items[:LIST_LENGTH]:
            ranks[u] = items.index(target)
    online = metrics_from_ranks(ranks, KS)
    top = offline.top_items
    assert top is not None  # noqa: S101 - keep_top > 0
    offline_ids = [[universe[c] for c in row if c >= 0] for row in top]
    column = {item: i for i, item in enumerate(universe)}
    target_cols = np.asarray([column[t] for t in targets], dtype=np.intp)
    offline_ranks = np.asarray(
        [
            ids.index(t) if t in ids else len(universe)
            for ids, t in zip(offline_ids, targets, strict=True)
        ]
    )
    online_gain = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    offline_gain = ndcg_per_user(top[:, :10], target_cols)

    def same(k: int) -> float:
        hits = [
            p is not None and p[:k] == o[:k] for p, o in zip(published, offline_ids, strict=True)
        ]
        return float(np.mean(hits))

    shown = {k: v for k, v in chosen.items() if k not in ("model_dir", "metrics_port", "app_id")}
    return ReplayReport(
        dataset=dataset,
        protocol=protocol,
        seed=seed,
        n_test_users=len(full.test),
        n_users=len(users),
        n_items=len(universe),
        n_train_events=len(full.train),
        n_replayed_events=len(replayed),
        online=online,
        offline=dict(offline.metrics),
        ndcg10_online_minus_offline=_paired(online_gain, offline_gain),
        same_top10=same(10),
        same_top20=same(20),
        rank_changes=int((ranks != offline_ranks).sum()),
        users_without_list=sum(p is None for p in published),
        dead_letters=collected.dead,
        lists_received=collected.received,
        history_length=history,
        truncated_histories=int((replayed.groupby("user_id").size() > history).sum()),
        events_per_s=(collected.received + collected.dead) / collected.seconds
        if collected.seconds
        else 0.0,
        replay_seconds=collected.seconds,
        wall_seconds=time.perf_counter() - started,
        timings=timings,
        model_version=model.version,
        chosen=chosen_params,
        worker_settings=shown,
        ts_shift_ms=shift,
    )
