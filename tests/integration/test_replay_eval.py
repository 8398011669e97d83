"""Online replay evaluation: what the real worker publishes scores like the offline ranking.

Each run starts its own Kafka broker and redis-server through deploy/local's scripts and
one `streamrec worker` process (streamrec.stream.cli.replay_eval), on the synthetic shop of
tests/shop.py.
With near-duplicate filtering off, the served list is the top of the same full scoring
(exact Flat index over the same item vectors, the same user-vector code, the whole history
excluded), so the online metrics are the offline ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streamrec.engine.offline.evaluation_report import TABLE_METRICS
from streamrec.engine.offline.training import TrainParams
from streamrec.engine.serving.sequential import SequenceParams
from streamrec.stream.cli import evaluate as evaluate_cli
from streamrec.stream.cli.replay_eval import run_replay_evaluation
from tests import shop

pytestmark = pytest.mark.integration

SMALL_GRID = TrainParams(
    dim=16,
    windows=(10,),
    shifts=(1.0,),
    eig_powers=(0.5,),
    decays=(0.75,),
    popularity_weights=(0.0, 0.5),
)
NEAR_DUPLICATES_OFF = {"near_duplicate_cosine": "2"}


def test_published_lists_score_exactly_like_the_offline_full_ranking() -> None:
    events = shop.events(users=120, per_user=20)
    stages: set[str] = set()
    report = run_replay_evaluation(
        events,
        shop.catalog(),
        seed=0,
        train_params=SMALL_GRID,
        worker_settings=NEAR_DUPLICATES_OFF,
        progress=lambda stage, done, total: stages.add(stage),
    )

    assert report.n_users == report.n_test_users == 120
    assert report.n_replayed_events == len(events) - 120  # all but each user's target
    # every event was served, every evaluated user got the list after their last event
    assert report.users_without_list == 0
    assert report.dead_letters == 0
    assert report.lists_received == report.n_replayed_events
    for key, _ in TABLE_METRICS:
        assert report.online[key].mean == pytest.approx(report.offline[key].mean, abs=1e-12)
    assert report.relative_difference("ndcg@10") == pytest.approx(0.0, abs=1e-12)
    assert report.ndcg10_online_minus_offline.mean == pytest.approx(0.0, abs=1e-12)
    assert report.rank_changes == 0  # every target sits where the offline ranking put it
    # The same lists, item for item. (FAISS and numpy add up the same products in a
    # different order, so two items whose scores tie to ~1e-7 could swap; allow for one.)
    assert report.same_top10 >= 1 - 1 / 120
    assert report.offline["recall@10"].mean > 0.2  # a model that learned the departments
    assert report.history_length >= 50
    assert report.events_per_s > 0
    assert {"replay: events sent", "replay: lists received"} <= stages


def test_with_the_sequential_encoder_the_worker_publishes_the_offline_lists() -> None:
    # The encoder reads each user's history from Redis on every event; offline it reads
    # the training log. The published lists must be the offline full ranking's.
    events = shop.events(users=60, per_user=20)
    report = run_replay_evaluation(
        events,
        shop.catalog(),
        seed=0,
        train_params=SMALL_GRID,
        sequence_params=SequenceParams(dim=16, heads=2, layers=1, max_len=20, max_epochs=4),
        sequence_weights=(0.5,),
        worker_settings=NEAR_DUPLICATES_OFF,
    )
    assert report.model_version.startswith("seqrec-")
    assert report.users_without_list == 0
    assert report.dead_letters == 0
    # float32 sums in other batch shapes may swap near-ties; at most one user in 60.
    assert report.same_top10 >= 1 - 1 / 60
    assert abs(report.relative_difference("ndcg@10")) < 0.05


def test_evaluate_replay_command_writes_both_tables_for_a_user_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, catalog = tmp_path / "events.csv", tmp_path / "catalog.parquet"
    shop.events(users=80, per_user=12).to_csv(log, index=False)
    shop.catalog().to_parquet(catalog)
    parser = argparse.ArgumentParser(prog="streamrec")
    evaluate_cli.add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        ["evaluate", "--events", str(log), "--catalog", str(catalog), "--replay"]
        + ["--users", "30", "--seed", "3", "--out", str(out)]
    )
    assert args.func(args) == 0

    data = json.loads((out / "replay.json").read_text(encoding="utf-8"))
    assert data["n_users"] == 30
    assert data["n_test_users"] == 80
    assert data["users_without_list"] == 0
    assert data["worker_settings"]["num_recommendations"] == "20"
    assert set(data["online"]) == set(data["offline"]) == {k for k, _ in TABLE_METRICS}
    assert data["machine"]
    table = (out / "replay.md").read_text(encoding="utf-8")
    assert "| online (published lists) |" in table
    assert "| offline (full ranking) |" in table
    assert capsys.readouterr().out == table
