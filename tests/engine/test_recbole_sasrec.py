"""RecBole's SASRec as a baseline: our split handed over intact, scores in our columns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline.evaluation import evaluate_full_ranking, leave_last_out
from streamrec.engine.offline.evaluation_runner import BaselineGrids, run_evaluation
from streamrec.engine.offline.recbole_sasrec import RecBoleSASRec, atomic_interactions, load_recbole
from streamrec.engine.offline.score_cache import cache_key, load_scores
from tests.eval_data import events_from, shop_events

try:
    load_recbole()
except RuntimeError as exc:  # BaselineUnavailableError
    pytest.skip(f"RecBole is not installed: {exc}", allow_module_level=True)

TINY = {"epochs": 3, "train_batch_size": 256, "hidden_size": 16, "inner_size": 32}


def test_atomic_file_keeps_our_order_and_puts_each_target_last() -> None:
    # Two events share a timestamp: our order (file order) must survive RecBole's sort.
    split = leave_last_out(
        events_from([("u", "b", 5), ("u", "a", 5), ("u", "c", 9), ("v", "a", 1), ("v", "c", 2)])
    )
    inter = atomic_interactions(split)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    u = inter[inter["user_id:token"] == "u"].sort_values("timestamp:float", kind="stable")
    assert u["item_id:token"].tolist() == ["b", "a", "c"]
    assert inter["timestamp:float"].is_unique


def _cycles(users: int = 40, length: int = 10, n: int = 12) -> pd.DataFrame:
    """Every user walks the same 12-item cycle from a random start: the next item is known."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(users):
        start = int(rng.integers(n))
        rows += [(f"u{u}", f"i{(start + j) % n}", u * 100 + j) for j in range(length)]
    return events_from(rows)


def test_sasrec_learns_a_known_sequence_and_scores_our_columns() -> None:
    split = leave_last_out(_cycles())
    universe = [*split.item_ids(), "never-seen"]
    params = {**TINY, "epochs": 40, "learning_rate": 0.01, "hidden_dropout_prob": 0.1}
    model = RecBoleSASRec.fit(split, universe, seed=0, params=params, threads=1)
    histories, types = split.histories()
    scores = model(histories[:8], types[:8])
    assert scores.shape == (8, len(universe))
    assert np.isfinite(scores).all()
    # An item RecBole never saw scores below every item it knows.
    assert (scores[:, -1:] < np.delete(scores, -1, axis=1).min(axis=1, keepdims=True)).all()
    assert len(model.validation_curve) == model.epochs_run
    # The next item of the cycle is found (our columns line up with RecBole's ids).
    assert evaluate_full_ranking(model, split, universe, ks=(1,))["recall@1"].mean > 0.9


def test_time_budget_stops_training_and_keeps_the_best_epoch() -> None:
    split = leave_last_out(shop_events(users=20, per_user=8))
    ticks = iter(range(0, 10_000, 100))
    model = RecBoleSASRec.fit(
        split,
        split.item_ids(),
        seed=0,
        params=TINY,
        threads=1,
        max_seconds=150,
        clock=lambda: float(next(ticks)),
    )
    assert model.stopped_by_budget
    assert model.epochs_run == 2


def test_evaluation_runs_sasrec_once_and_reads_it_back_from_the_cache(tmp_path: Path) -> None:
    events = shop_events(users=20, per_user=8)
    grids = BaselineGrids(sasrec=TINY, sasrec_threads=1)
    first = run_evaluation(
        events, None, "leave-last-out", 0, ("sasrec",), grids=grids, cache_dir=tmp_path
    )
    assert len(list(tmp_path.glob("sasrec-*.npz"))) == 1
    second = run_evaluation(
        events, None, "leave-last-out", 0, ("sasrec",), grids=grids, cache_dir=tmp_path
    )
    a, b = first["sasrec"], second["sasrec"]
    assert a.result.as_dict() == b.result.as_dict()
    assert "RecBole 1.2.1 SASRec" in a.notes
    assert "from the cache" in b.notes
    split = leave_last_out(events)
    other = cache_key("sasrec", split, split.item_ids(), {"epochs": 4})
    assert load_scores(tmp_path, other) is None


def test_sasrec_is_deterministic_for_a_seed() -> None:
    split = leave_last_out(shop_events(users=20, per_user=8))
    universe = split.item_ids()
    histories, types = split.histories()
    a = RecBoleSASRec.fit(split, universe, seed=3, params=TINY, threads=1)
    b = RecBoleSASRec.fit(split, universe, seed=3, params=TINY, threads=1)
    np.testing.assert_array_equal(a(histories, types), b(histories, types))


def test_a_run_cut_by_the_budget_resumes_from_its_checkpoint_as_one_run(tmp_path: Path) -> None:
    split = leave_last_out(shop_events(users=20, per_user=8))
    universe = split.item_ids()
    histories, types = split.histories()
    params = {**TINY, "epochs": 4}
    whole = RecBoleSASRec.fit(split, universe, seed=5, params=params, threads=1)
    checkpoint = tmp_path / "sasrec.checkpoint.pt"
    ticks = iter(range(0, 10_000, 100))
    cut = RecBoleSASRec.fit(
        split,
        universe,
        seed=5,
        params=params,
        threads=1,
        max_seconds=150,
        clock=lambda: float(next(ticks)),
        checkpoint=checkpoint,
    )
    assert cut.stopped_by_budget
    assert cut.epochs_run == 2
    assert checkpoint.exists()
    resumed = RecBoleSASRec.fit(
        split, universe, seed=5, params=params, threads=1, checkpoint=checkpoint
    )
    assert not resumed.stopped_by_budget
    assert resumed.epochs_run == whole.epochs_run == 4
    assert resumed.validation_curve == whole.validation_curve
    np.testing.assert_array_equal(resumed(histories, types), whole(histories, types))
    # Budget 0 trains nothing more: the saved run is scored as it is.
    again = RecBoleSASRec.fit(
        split, universe, seed=5, params=params, threads=1, max_seconds=0, checkpoint=checkpoint
    )
    np.testing.assert_array_equal(again(histories, types), whole(histories, types))


def test_evaluation_resumes_a_budget_cut_sasrec_run_instead_of_reading_its_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative cache dir (as `--cache-dir .cache/evaluation`): the checkpoint must land
    # there, not in the temporary directory RecBole trains in.
    monkeypatch.chdir(tmp_path)
    cache = Path("cache")
    events = shop_events(users=20, per_user=8)
    cut = BaselineGrids(sasrec={**TINY, "epochs": 3}, sasrec_threads=1, sasrec_max_seconds=1e-9)
    first = run_evaluation(
        events, None, "leave-last-out", 0, ("sasrec",), grids=cut, cache_dir=cache
    )
    assert first["sasrec"].chosen["epochs_run"] == 1
    assert len(list((tmp_path / "cache").glob("sasrec-*.checkpoint.pt"))) == 1
    assert "time budget" in first["sasrec"].notes
    reported = run_evaluation(
        events,
        None,
        "leave-last-out",
        0,
        ("sasrec",),
        grids=replace(cut, sasrec_max_seconds=0),
        cache_dir=cache,
    )
    assert "from the cache" in reported["sasrec"].notes
    assert reported["sasrec"].chosen["epochs_run"] == 1
    resumed = run_evaluation(
        events,
        None,
        "leave-last-out",
        0,
        ("sasrec",),
        grids=replace(cut, sasrec_max_seconds=None),
        cache_dir=cache,
    )
    assert resumed["sasrec"].chosen["epochs_run"] == 3
    assert "3 epochs (stopped by its epoch limit)" in resumed["sasrec"].notes
