"""A running A/B experiment in the worker's pipeline: each user ranked with their arm's
settings, lists labelled with experiment, variant and a stable recommendation id, actions
on lists counted per arm and user, and the report read back from Redis.

Driven directly (no Faust) against the real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from engine.catalog import Catalog
from engine.experiments import assign, load_experiments
from engine.recommender import Recommender
from index.faiss_index import FaissItemIndex
from stream.metrics import Metrics
from stream.pipeline import Pipeline, RawMessage
from stream.redis_store import RedisStore
from stream.replay import catalog_items
from stream.settings import Settings
from tests import shop
from tests.conftest import ROOT, settings_env

pytestmark = pytest.mark.integration
NOW = 1_700_000_000_000
EXPERIMENT = """
[[experiment]]
name = "short-lists"
holdout = 0.1
[[experiment.variant]]
name = "A"
share = 0.5
[[experiment.variant]]
name = "B"
share = 0.5
overrides = { num_recommendations = 5, diversity_weight = 0.5 }
"""


def _event(
    n: int, user: str, item: str, kind: str = "view", rec_id: str | None = None
) -> RawMessage:
    body: dict[str, object] = {
        "event_id": f"x{n}",
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": NOW - 1000 + n,
    }
    if rec_id is not None:
        body["context"] = {"recommendation_id": rec_id}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, n)


def test_each_arm_is_ranked_with_its_settings_and_counted_for_the_report(
    settings: Settings, shop_model, tmp_path: Path
):
    (tmp_path / "experiments.toml").write_text(EXPERIMENT)
    settings = settings.model_copy(
        update={
            "experiments_file": tmp_path / "experiments.toml",
            "experiment_key": SecretStr("exp-key"),
        }
    )
    [experiment] = load_experiments(EXPERIMENT)
    loop = asyncio.new_event_loop()
    metrics = Metrics(CollectorRegistry())
    store = RedisStore.from_settings(settings)
    index = FaissItemIndex.load(shop_model.model_dir / "index")
    pipeline = Pipeline(
        settings, Recommender(shop_model.model, index, Catalog()), store, metrics, clock=lambda: NOW
    )
    try:
        loop.run_until_complete(store.put_items(catalog_items(shop.catalog())))
        users = [f"exp-user-{n}" for n in range(120)]
        first = loop.run_until_complete(
            pipeline.handle_events([_event(n, u, "books-1") for n, u in enumerate(users)])
        )
        lists = [json.loads(r.value) for r in first.recommendations]
        assert len(lists) == len(users)
        arms = {}
        for rec in lists:
            arm = assign(experiment, rec["user_id"], b"exp-key")
            arms[rec["user_id"]] = arm
            assert rec["experiment"] == "short-lists"
            assert rec["variant"] == arm
            assert len(rec["items"]) == (5 if arm == "B" else 10)  # B's override, holdout default
            assert rec["recommendation_id"].startswith("r-")
        assert {"A", "B", "holdout"} == set(arms.values())
        # Every A and B user clicks an item of their list, citing it; one click is replayed.
        clicks = [
            _event(
                1000 + n,
                rec["user_id"],
                rec["items"][0]["item_id"],
                "click",
                rec["recommendation_id"],
            )
            for n, rec in enumerate(lists)
        ]
        loop.run_until_complete(pipeline.handle_events(clicks))
        loop.run_until_complete(pipeline.handle_events(clicks[:1]))  # a replay counts once
        for arm in ("A", "B"):
            served = loop.run_until_complete(store.experiment_counts("short-lists", arm, "lists"))
            clicked = loop.run_until_complete(store.experiment_counts("short-lists", arm, "click"))
            members = [u for u, a in arms.items() if a == arm]
            assert sorted(served) == sorted(members)
            assert set(served.values()) == {2}  # the first event and the click each got a list
            assert set(clicked.values()) == {1}
            assert metrics.experiment_actions.labels(
                experiment="short-lists", variant=arm, type="click"
            )._value.get() == len(members)
    finally:
        loop.run_until_complete(pipeline.close())
        loop.run_until_complete(store.close())
        loop.close()

    report = _report(settings, "short-lists")
    assert report.returncode == 0, report.stderr
    assert "CTR: A 0.5000, B 0.5000" in report.stdout
    assert "No difference in CTR" in report.stdout or "Not enough data" in report.stdout
    missing = _report(settings, "nope")
    assert missing.returncode != 0
    assert "not in STREAMREC_EXPERIMENTS_FILE" in missing.stderr


def _report(settings: Settings, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "experiment", "report", name],
        cwd=ROOT,
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_experiments_file_without_a_key_is_refused():
    with pytest.raises(ValueError, match="STREAMREC_EXPERIMENT_KEY"):
        Settings(experiments_file=Path(__file__))
