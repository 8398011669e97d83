"""An A/B experiment in a running worker, over the real broker and redis-server: lists
carry their arm, actions citing a list are counted per arm, and an edited experiments
file is picked up without a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.engine.serving.catalog import catalog_items
from streamrec.engine.serving.experiments import assign, load_experiments
from streamrec.stream.cli.replay import wait_for_catalog
from streamrec.stream.contracts import encode_item
from streamrec.stream.kafka_io import ensure_topics
from tests import shop
from tests.conftest import run_cli
from tests.integration.kafka_helpers import Collector, event, produce

pytestmark = pytest.mark.integration
KEY = "live-experiment-key"
EXPERIMENT = """
[[experiment]]
name = "live"
[[experiment.variant]]
name = "A"
share = 0.5
[[experiment.variant]]
name = "B"
share = 0.5
overrides = { num_recommendations = 4 }
"""


def test_a_worker_serves_each_arm_counts_actions_and_follows_file_changes(
    settings, start_worker, tmp_path: Path
):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENT)
    settings = settings.model_copy(
        update={
            "experiments_file": path,
            "experiment_key": SecretStr(KEY),
            "experiment_refresh_s": 1.0,
        }
    )
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)
    items = catalog_items(shop.catalog())
    produce(settings, settings.topic_items, [(i.item_id.encode(), encode_item(i)) for i in items])
    asyncio.run(wait_for_catalog(settings, {i.item_id for i in items}))
    [experiment] = load_experiments(EXPERIMENT)
    users = [f"live-user-{n}" for n in range(24)]
    arms = {u: assign(experiment, u, KEY.encode()) for u in users}
    assert set(arms.values()) == {"A", "B"}

    produce(
        settings,
        settings.topic_events,
        [event(f"v{n}", u, "running-3") for n, u in enumerate(users)],
    )
    recs = Collector(settings, settings.topic_recommendations)
    first = recs.by_trigger(*(f"v{n}" for n in range(len(users))), timeout=90)
    for n, user in enumerate(users):
        rec = first[f"v{n}"]
        assert (rec["experiment"], rec["variant"]) == ("live", arms[user])
        assert len(rec["items"]) == (4 if arms[user] == "B" else 10)
    # Each user clicks the top item of their list, citing it.
    produce(
        settings,
        settings.topic_events,
        [
            event(
                f"c{n}", u, first[f"v{n}"]["items"][0]["item_id"], "click",
                context={"recommendation_id": first[f"v{n}"]["recommendation_id"]},
            )
            for n, u in enumerate(users)
        ],
    )  # fmt: skip
    recs.by_trigger(*(f"c{n}" for n in range(len(users))), timeout=90)
    for arm in ("A", "B"):
        clicked = worker.metric(
            "streamrec_experiment_actions_total",
            experiment="live", variant=arm, type="click", attribution="id",
        )  # fmt: skip
        assert clicked == list(arms.values()).count(arm)

    # The file changes: a new experiment starts without a restart.
    path.write_text(EXPERIMENT.replace('name = "live"', 'name = "live-2"'))
    deadline = time.monotonic() + 30
    while worker.metric("streamrec_experiment_reloads_total", outcome="applied") < 1:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.5)
    produce(settings, settings.topic_events, [event("after", users[0], "books-2")])
    after = recs.by_trigger("after", timeout=60)["after"]
    assert after["experiment"] == "live-2"
    assert worker.proc.poll() is None

    report = run_cli(settings, "experiment", "report", "live-2")
    assert report.returncode == 0, report.stderr
    arm = after["variant"]
    row = next(line for line in report.stdout.splitlines() if line.startswith(f"{arm} | "))
    assert row.split(" | ")[1:3] == ["1", "1"]  # one user, one list so far
