"""Specification of ``run_evaluation``: one split, full ranking, every model, honest reports."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline import evaluation_runner
from streamrec.engine.offline.als import BaselineUnavailableError
from streamrec.engine.offline.evaluation import Recommender, Split
from streamrec.engine.offline.evaluation_runner import (
    MODEL_NAMES,
    BaselineGrids,
    run_evaluation,
    tune,
)
from streamrec.engine.offline.training import TrainParams
from streamrec.engine.serving.sequential import SequenceParams
from tests.eval_data import shop_catalog, shop_events

TINY_TRAIN = TrainParams(
    dim=8,
    windows=(5,),
    shifts=(1.0,),
    eig_powers=(0.5,),
    decays=(0.75,),
    popularity_weights=(0.0, 0.5),
)
TINY_GRIDS = BaselineGrids(
    knn_neighbours=(5, 10),
    ease_lambdas=(1.0, 10.0),
    als_factors=(8,),
    als_regularizations=(0.1,),
    als_iterations=(5,),
    als_alphas=(1.0,),
    sasrec={"epochs": 2, "hidden_size": 16, "inner_size": 32, "train_batch_size": 256},
    sasrec_threads=1,
)
TINY_SEQUENCE = SequenceParams(dim=8, heads=2, layers=1, max_len=10, max_epochs=3)


def _run(**kwargs: object) -> evaluation_runner.EvaluationReport:
    args: dict[str, object] = {
        "events": shop_events(),
        "catalog": shop_catalog(),
        "protocol": "leave-last-out",
        "seed": 7,
        "models": MODEL_NAMES,
        "train_params": TINY_TRAIN,
        "sequence_params": TINY_SEQUENCE,
        "grids": TINY_GRIDS,
    }
    return run_evaluation(**(args | kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def report() -> evaluation_runner.EvaluationReport:
    return _run()


def test_every_model_ranks_every_catalog_item_never_a_sample(
    report: evaluation_runner.EvaluationReport,
) -> None:
    assert [m.name for m in report.results] == list(MODEL_NAMES)
    assert report.n_items == len(shop_catalog())  # catalog-only items are ranked too
    for m in report.results:
        assert m.result.n_items == len(shop_catalog()), m.name
        assert m.result.n_users == report.n_test_users == 80, m.name


def test_models_that_learn_beat_popularity_on_department_data(
    report: evaluation_runner.EvaluationReport,
) -> None:
    popular = report["popular"].result["ndcg@10"].mean
    for name in ("ours", "item-knn", "ease", "als"):
        assert report[name].result["ndcg@10"].mean > popular, name


def test_list_metrics_are_reported_in_our_vector_space(
    report: evaluation_runner.EvaluationReport,
) -> None:
    for m in report.results:
        assert m.diversity is not None, m.name
        assert 0.0 <= m.diversity <= 2.0, m.name
        assert m.novelty > 0.0, m.name
    # everyone gets the same popular items: the list is less novel than item-kNN's
    assert report["popular"].novelty < report["item-knn"].novelty


def test_each_model_is_compared_with_ours_on_the_same_users(
    report: evaluation_runner.EvaluationReport,
) -> None:
    ours = report["ours"].result["ndcg@10"].mean
    assert report["ours"].ndcg_vs_ours is None
    for m in report.results[1:]:
        assert m.ndcg_vs_ours is not None, m.name
        assert m.ndcg_vs_ours.mean == pytest.approx(m.result["ndcg@10"].mean - ours), m.name


def test_tuned_models_report_what_validation_chose(
    report: evaluation_runner.EvaluationReport,
) -> None:
    assert report["ease"].grid_size == 4  # 2 weightings x 2 lambdas
    assert report["ease"].chosen["lam"] in (1.0, 10.0)
    assert report["ease"].validation_ndcg is not None
    assert report["ours"].grid_size == 2
    assert report["popular"].grid_size == 0


def test_markdown_and_json_hold_every_model(report: evaluation_runner.EvaluationReport) -> None:
    table = report.to_markdown()
    for name in MODEL_NAMES:
        assert f"| {name} |" in table
    assert "no sampled negatives" in table
    data = json.loads(report.to_json())
    assert set(data["models"]) == set(MODEL_NAMES)
    assert data["models"]["ease"]["n_items"] == len(shop_catalog())
    assert data["models"]["ours"]["metrics"]["ndcg@10"]["ci95"] > 0


def test_the_report_states_the_recall_ceiling_that_repeat_targets_set(
    report: evaluation_runner.EvaluationReport,
) -> None:
    seen = report.n_test_users // 4
    repeats = dataclasses.replace(
        report,
        results=tuple(
            dataclasses.replace(m, result=dataclasses.replace(m.result, n_seen_targets=seen))
            for m in report.results
        ),
    )
    share = seen / report.n_test_users
    assert (
        f"{seen:,} of {report.n_test_users:,} targets ({share:.1%}) were already in the "
        "user's training history" in repeats.to_markdown()
    )
    assert f"recall@k is at most {1 - share:.3f} here" in repeats.to_markdown()
    no_repeats = dataclasses.replace(
        report,
        results=tuple(
            dataclasses.replace(m, result=dataclasses.replace(m.result, n_seen_targets=0))
            for m in report.results
        ),
    )
    assert "at most" not in no_repeats.to_markdown()


def test_a_run_is_deterministic_for_a_seed(report: evaluation_runner.EvaluationReport) -> None:
    def metrics(r: evaluation_runner.EvaluationReport) -> dict[str, object]:
        return {m.name: (m.result, m.diversity, m.novelty, dict(m.chosen)) for m in r.results}

    assert metrics(_run()) == metrics(report)


def test_without_implicit_als_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> None:
        msg = "the ALS baseline needs `pip install implicit`"
        raise BaselineUnavailableError(msg)

    monkeypatch.setattr(evaluation_runner, "load_implicit", missing)
    with caplog.at_level(logging.WARNING, logger="streamrec.engine.offline.evaluation_runner"):
        result = _run(models=("popular", "als"))
    assert [m.name for m in result.results] == ["popular"]
    assert "pip install implicit" in result.skipped["als"]
    assert "skipping als" in caplog.text
    assert "Skipped **als**" in result.to_markdown()


def test_the_time_protocol_targets_the_first_event_after_the_cut() -> None:
    result = _run(protocol="time", test_fraction=0.25, models=("popular", "ease"))
    assert result.protocol == "time"
    assert result.test_fraction == 0.25
    assert result.n_test_users == 80  # every user has events on both sides of the cut
    assert result.n_train_events == 720


def test_unknown_models_and_protocols_are_refused() -> None:
    with pytest.raises(ValueError, match="models must be a non-empty subset"):
        _run(models=("ours", "gru4rec"))
    with pytest.raises(ValueError, match="protocol"):
        _run(protocol="random")


def test_tune_keeps_the_best_validation_point_first_on_ties() -> None:
    items = ["a", "b", "c"]
    events = pd.DataFrame(
        {
            "event_id": ["1", "2"],
            "user_id": ["u", "u"],
            "item_id": ["a", "c"],
            "type": "view",
            "ts": np.array([1, 2], dtype=np.int64),
        }
    )
    validation = Split(train=events.iloc[:1], test=events.iloc[1:].reset_index(drop=True))

    def build(params: object) -> Recommender:
        favourite = items.index(str(params["item"]))  # type: ignore[index]

        def recommend(h: Sequence[Sequence[str]], t: Sequence[Sequence[str]]) -> np.ndarray:
            scores = np.zeros((len(h), 3))
            scores[:, favourite] = 1.0
            return scores

        return recommend

    grid = [{"item": "b"}, {"item": "c"}, {"item": "c", "again": 1.0}]
    tuned = tune(build, grid, validation, items)
    assert tuned.params == {"item": "c"}
    assert tuned.score == 1.0
    assert tuned.n_points == 3


def test_a_rerun_with_a_cache_reads_every_model_back_and_reports_the_same(tmp_path) -> None:
    models = ("ours", "popular", "ease")
    first = _run(models=models, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == len(models)
    second = _run(models=models, cache_dir=tmp_path)
    for name in models:
        assert second[name].result.as_dict() == first[name].result.as_dict()
        assert "from the cache" in second[name].notes
        assert second[name].chosen == first[name].chosen
    assert second["ours"].diversity == pytest.approx(first["ours"].diversity)
    # Another seed is another key: nothing is read back.
    third = _run(models=("popular",), cache_dir=tmp_path, seed=8)
    assert "from the cache" not in third["popular"].notes
