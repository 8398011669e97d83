"""The replay evaluation's edges, without a broker: settings it refuses before doing any
work, and its report. The replay itself is tested in tests/integration/test_replay_eval.py."""

from __future__ import annotations

import json
import math

import pytest

from streamrec.engine.offline.evaluation import MetricEstimate
from streamrec.engine.offline.evaluation_report import TABLE_METRICS
from streamrec.stream.cli.replay_eval import run_replay_evaluation
from streamrec.stream.cli.replay_report import ReplayReport
from tests import shop


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redis_url": "redis://elsewhere:6379/0"}, "got fixed \\['redis_url'\\]"),
        ({"topic_events": "x"}, "got fixed \\['topic_events'\\]"),
        ({"no_such_setting": "1"}, "unknown \\['no_such_setting'\\]"),
        ({"num_recommendations": "10"}, "num_recommendations must be >= 20, got 10"),
        ({"history_length": "0"}, "history_length"),
    ],
)
def test_worker_settings_are_checked_before_anything_starts(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_replay_evaluation(
            shop.events(users=8, per_user=4), shop.catalog(), seed=0, worker_settings=settings
        )


def test_a_bad_user_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="users_limit must be >= 1, got 0"):
        run_replay_evaluation(shop.events(users=8, per_user=4), None, seed=0, users_limit=0)


def _report(online: float, offline: float) -> ReplayReport:
    def metrics(value: float) -> dict[str, MetricEstimate]:
        return {key: MetricEstimate(value, 0.01) for key, _ in TABLE_METRICS}

    return ReplayReport(
        dataset="shop",
        protocol="leave-last-out",
        seed=1,
        n_test_users=100,
        n_users=40,
        n_items=100,
        n_train_events=900,
        n_replayed_events=360,
        online=metrics(online),
        offline=metrics(offline),
        ndcg10_online_minus_offline=MetricEstimate(online - offline, 0.002),
        same_top10=0.95,
        same_top20=0.9,
        rank_changes=2,
        users_without_list=0,
        dead_letters=0,
        lists_received=360,
        history_length=50,
        truncated_histories=0,
        events_per_s=180.0,
        replay_seconds=2.0,
        wall_seconds=20.0,
        worker_settings={"num_recommendations": "20"},
    )


def test_the_report_shows_both_paths_and_their_relative_difference() -> None:
    report = _report(online=0.18, offline=0.2)
    assert report.relative_difference("ndcg@10") == pytest.approx(-0.1)
    table = report.to_markdown()
    assert "40 of 100 test users (seeded sample)" in table
    assert "| offline (full ranking) | 0.2000 ± 0.0100 |" in table
    assert "| online (published lists) | 0.1800 ± 0.0100 |" in table
    assert "| online / offline − 1 | -10.00% |" in table
    data = json.loads(report.to_json())
    assert data["relative_difference"]["recall@10"] == pytest.approx(-0.1)
    assert data["online"]["ndcg@10"] == {"mean": 0.18, "ci95": 0.01}


def test_a_zero_offline_metric_has_no_relative_difference() -> None:
    report = _report(online=0.0, offline=0.0)
    assert math.isnan(report.relative_difference("mrr@20"))
    assert json.loads(report.to_json())["relative_difference"]["mrr@20"] is None
