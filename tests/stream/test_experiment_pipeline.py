"""A running A/B experiment in the worker's pipeline: each user ranked with their arm's
settings (or model), lists labelled with experiment, variant and a stable recommendation
id, actions attributed to lists (by id, or within the window) and counted per arm and user,
arms kept apart, the file reloaded, and the report read back from Redis.

Driven directly (no Faust) against the real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streamrec.engine.reasons.generator import OUTCOMES
from streamrec.engine.serving.catalog import Catalog, catalog_items
from streamrec.engine.serving.experiments import ExperimentConfigError, assign, load_experiments
from streamrec.engine.serving.model import ItemModel
from streamrec.engine.serving.recommender import Recommender
from streamrec.index.faiss_index import FaissItemIndex
from streamrec.stream.redis_store import RedisStore
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.pipeline import Pipeline, RawMessage
from tests import shop
from tests.conftest import ROOT, settings_env
from tests.stream.test_reason_backends import ChatServer

pytestmark = pytest.mark.integration
T = TypeVar("T")
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
    n: int,
    user: str,
    item: str,
    kind: str = "view",
    rec_id: str | None = None,
    ts: int | None = None,
) -> RawMessage:
    body: dict[str, object] = {
        "event_id": f"x{n}",
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": NOW - 1000 + n if ts is None else ts,
    }
    if rec_id is not None:
        body["context"] = {"recommendation_id": rec_id}
    return RawMessage(json.dumps(body).encode(), user.encode(), "events", 0, n)


class Driver:
    """A pipeline with a running experiment, driven directly on its own event loop."""

    def __init__(
        self,
        settings: Settings,
        recommender: Recommender,
        experiments: str | None,
        tmp_path: Path,
        **update: object,
    ) -> None:
        if experiments is not None:
            (tmp_path / "experiments.toml").write_text(experiments)
            update |= {
                "experiments_file": tmp_path / "experiments.toml",
                "experiment_key": SecretStr("exp-key"),
            }
        self.settings = settings.model_copy(update=update)
        self.loop = asyncio.new_event_loop()
        self.metrics = Metrics(CollectorRegistry())
        self.store = RedisStore.from_settings(self.settings)
        try:
            self.pipeline = Pipeline(
                self.settings,
                recommender,
                self.store,
                self.metrics,
                clock=lambda: NOW,
                model_loader=_load_recommender,
            )
        except Exception:
            self.run(self.store.close())
            self.loop.close()
            raise
        self.run(self.store.put_items(catalog_items(shop.catalog())))

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def lists(self, events: list[RawMessage]) -> list[dict[str, Any]]:
        result = self.run(self.pipeline.handle_events(events))
        self.pipeline.record_published(result)
        return [json.loads(r.value) for r in result.recommendations]

    def close(self) -> None:
        self.run(self.pipeline.close())
        self.run(self.store.close())
        self.loop.close()


def _load_recommender(folder: Path) -> Recommender:
    return Recommender(ItemModel.load(folder), FaissItemIndex.load(folder / "index"), Catalog())


def _shop_recommender(shop_model: shop.TrainedShop) -> Recommender:
    return _load_recommender(shop_model.model_dir)


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_arm_is_ranked_with_its_settings_and_counted_for_the_report(
    settings: Settings, shop_model, tmp_path: Path
):
    [experiment] = load_experiments(EXPERIMENT)
    driver = Driver(settings, _shop_recommender(shop_model), EXPERIMENT, tmp_path)
    try:
        users = [f"exp-user-{n}" for n in range(120)]
        lists = driver.lists([_event(n, u, "books-1") for n, u in enumerate(users)])
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
        driver.lists(clicks)
        driver.lists(clicks[:1])  # a replay counts once
        store, metrics = driver.store, driver.metrics
        for arm in ("A", "B"):
            served = driver.run(store.experiment_counts("short-lists", arm, "lists"))
            clicked = driver.run(store.experiment_counts("short-lists", arm, "click"))
            members = [u for u, a in arms.items() if a == arm]
            assert sorted(served) == sorted(members)
            assert set(served.values()) == {2}  # the first event and the click each got a list
            assert set(clicked.values()) == {1}
            labels = {"experiment": "short-lists", "variant": arm}
            assert _metric(
                metrics, "streamrec_experiment_actions_total", **labels, type="click",
                attribution="id",
            ) == len(members)  # fmt: skip
            items = (5 if arm == "B" else 10) * 2 * len(members)  # not the replay's
            assert _metric(metrics, "streamrec_experiment_items_total", **labels) == items
            # Each published list's latency, the replay's too.
            assert _metric(
                metrics, "streamrec_experiment_event_to_publish_seconds_count", **labels
            ) == 2 * len(members) + (arm == arms[users[0]])
        # The coverage gauges: distinct items each arm showed, over the indexed catalog.
        driver.run(driver.pipeline.refresh_experiment())
        for arm in ("A", "B"):
            distinct = driver.run(store.experiment_coverage("short-lists", arm))
            assert 5 <= distinct <= 100
            assert _metric(
                metrics, "streamrec_experiment_coverage", experiment="short-lists", variant=arm
            ) == pytest.approx(distinct / 100)
    finally:
        driver.close()

    chart = tmp_path / "report.png"
    report = _report(driver.settings, "short-lists", "--chart", str(chart))
    assert report.returncode == 0, report.stderr
    assert "CTR: A 0.5000, B 0.5000" in report.stdout
    assert "bootstrap p" in report.stdout
    assert "No difference in CTR" in report.stdout or "Not enough data" in report.stdout
    table = {line.split(" | ")[0]: line.split(" | ") for line in report.stdout.splitlines()}
    assert table["B"][3] == "0.5000"  # CTR: one click per two lists
    assert table["B"][6].endswith("items)")  # coverage
    assert table["B"][8].endswith(" ms")  # mean latency, from the stored series
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = _report(driver.settings, "nope")
    assert missing.returncode != 0
    assert "not in STREAMREC_EXPERIMENTS_FILE" in missing.stderr


def test_actions_without_a_recommendation_id_count_within_the_attribution_window(
    settings: Settings, shop_model, tmp_path: Path
):
    """A click on an item recommended to the user 200 s earlier counts (window 600 s);
    a click on an item never recommended to them, or a purchase 650 s after the list,
    does not; views never do."""
    [experiment] = load_experiments(EXPERIMENT)
    driver = Driver(
        settings, _shop_recommender(shop_model), EXPERIMENT, tmp_path, attribution_window_s=600
    )
    shown_at = NOW - 700_000
    try:
        users = [f"win-user-{n}" for n in range(40)]
        lists = driver.lists(
            [_event(n, u, "running-1", ts=shown_at + n) for n, u in enumerate(users)]
        )
        follow = []
        for n, rec in enumerate(lists):
            items = [i["item_id"] for i in rec["items"]]
            never = next(f"kitchen-{k}" for k in range(25) if f"kitchen-{k}" not in items)
            follow += [
                _event(100 + n, rec["user_id"], items[0], "click", ts=shown_at + 200_000),
                _event(200 + n, rec["user_id"], never, "click", ts=shown_at + 200_001),
                _event(300 + n, rec["user_id"], items[1], "view", ts=shown_at + 200_002),
                _event(400 + n, rec["user_id"], items[2], "purchase", ts=shown_at + 650_000),
            ]
        driver.lists(follow)
        arms = {u: assign(experiment, u, b"exp-key") for u in users}
        for arm in ("A", "B"):
            members = sorted(u for u, a in arms.items() if a == arm)
            clicked = driver.run(driver.store.experiment_counts("short-lists", arm, "click"))
            bought = driver.run(driver.store.experiment_counts("short-lists", arm, "purchase"))
            assert sorted(clicked) == members
            assert set(clicked.values()) == {1}  # the recommended item only
            assert bought == {}
            assert _metric(
                driver.metrics, "streamrec_experiment_actions_total", experiment="short-lists",
                variant=arm, type="click", attribution="window",
            ) == len(members)  # fmt: skip
    finally:
        driver.close()


def _stream(users: list[str], rounds: int = 3) -> list[list[RawMessage]]:
    """Batches of events: each user browses their own department, round after round."""
    depts = list(shop.DEPARTMENTS)
    return [
        [
            _event(
                r * 1000 + n,
                u,
                f"{depts[n % len(depts)]}-{(3 * r + n) % shop.PER_DEPARTMENT}",
                "view" if r < 2 else "add_to_cart",
            )
            for n, u in enumerate(users)
        ]
        for r in range(rounds)
    ]


def _last_lists(driver: Driver, batches: list[list[RawMessage]]) -> dict[str, dict[str, Any]]:
    out = {}
    for batch in batches:
        out.update({rec["user_id"]: rec for rec in driver.lists(batch)})
    return out


def test_an_arms_own_model_never_shapes_the_other_arms_lists(
    settings: Settings, shop_model, tmp_path: Path
):
    """Arm B serves another model (its own vectors and online adaptation). A's users get
    exactly the lists they get with no experiment at all, and B's users exactly those of
    B's model alone: one arm's learning never reaches the other; the event history, the
    trending counts and co-occurrences they share are the same in every run."""
    model_b = shop.train(tmp_path / "model-b", dim=8)
    text = EXPERIMENT.replace("holdout = 0.1", "holdout = 0.0").replace(
        "overrides = { num_recommendations = 5, diversity_weight = 0.5 }",
        'overrides = { model_dir = "model-b" }',
    )
    [experiment] = load_experiments(text)
    users = [f"iso-user-{n}" for n in range(60)]
    arms = {u: assign(experiment, u, b"exp-key") for u in users}
    assert set(arms.values()) == {"A", "B"}

    def run(recommender: Recommender, experiments: str | None) -> dict[str, dict[str, Any]]:
        driver = Driver(settings, recommender, experiments, tmp_path)
        try:
            driver.run(driver.store.client.flushdb())
            driver.run(driver.store.put_items(catalog_items(shop.catalog())))
            return _last_lists(driver, _stream(users))
        finally:
            driver.close()

    both = run(_shop_recommender(shop_model), text)
    alone_a = run(_shop_recommender(shop_model), None)
    alone_b = run(_load_recommender(model_b.model_dir), None)
    assert shop_model.model.version != model_b.model.version
    for user, arm in arms.items():
        alone = alone_a if arm == "A" else alone_b
        assert both[user]["variant"] == arm
        assert both[user]["model_version"] == alone[user]["model_version"]
        assert both[user]["items"] == alone[user]["items"], (user, arm)
    # The two models do disagree, so equal lists are not an accident of equal models.
    assert any(alone_a[u]["items"] != alone_b[u]["items"] for u in users)


def test_the_file_is_reloaded_when_it_changes_and_a_bad_change_is_rejected(
    settings: Settings, shop_model, tmp_path: Path
):
    driver = Driver(settings, _shop_recommender(shop_model), EXPERIMENT, tmp_path)
    path = tmp_path / "experiments.toml"
    users = [f"reload-user-{n}" for n in range(20)]

    def rewrite(text: str) -> bool:
        path.write_text(text)
        stat = path.stat()  # a new mtime even within the file system's time resolution
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        return driver.run(driver.pipeline.refresh_experiment())

    def experiments_served(n: int) -> set[str | None]:
        return {
            rec.get("experiment") for rec in driver.lists([_event(n, u, "books-2") for u in users])
        }

    try:
        assert experiments_served(1) == {"short-lists"}
        assert not driver.run(driver.pipeline.refresh_experiment())  # unchanged: nothing
        assert rewrite(EXPERIMENT.replace('name = "short-lists"', 'name = "second"'))
        assert experiments_served(2) == {"second"}
        # An unknown override: rejected, counted, and "second" keeps running.
        assert not rewrite(EXPERIMENT.replace("diversity_weight", "diversity"))
        assert experiments_served(3) == {"second"}
        assert (
            _metric(driver.metrics, "streamrec_experiment_reloads_total", outcome="rejected") == 1
        )
        # Unknown keys outside overrides (a misspelt holdout, an override in the wrong
        # place) would run an experiment that tests nothing: rejected the same way.
        probe = (
            EXPERIMENT.replace('name = "short-lists"', 'name = "probe4"')
            .replace("holdout", "holdot")
            .replace("overrides = { num_recommendations = 5, diversity_weight = 0.5 }", "")
        )
        assert not rewrite(probe + "num_recommendations = 4\n")
        assert experiments_served(3) == {"second"}
        assert (
            _metric(driver.metrics, "streamrec_experiment_reloads_total", outcome="rejected") == 2
        )
        # A definition that fails while it is installed (here: the catalog catch-up
        # raises) is rejected the same way.
        runner = driver.pipeline.experiments

        def broken(*args: object) -> None:
            msg = "catalog catch-up failed"
            raise RuntimeError(msg)

        runner._install = broken  # type: ignore[method-assign]
        assert not rewrite(EXPERIMENT.replace('name = "short-lists"', 'name = "third"'))
        del runner._install
        assert experiments_served(4) == {"second"}
        assert (
            _metric(driver.metrics, "streamrec_experiment_reloads_total", outcome="rejected") == 3
        )
        # A file without experiments stops it.
        assert rewrite("# no experiment running\n")
        assert experiments_served(5) == {None}
        assert _metric(driver.metrics, "streamrec_experiment_reloads_total", outcome="applied") == 2
    finally:
        driver.close()


def test_ranker_overrides_on_a_model_without_a_ranker_stop_the_worker_with_the_reason(
    settings: Settings, shop_model, tmp_path: Path
):
    text = EXPERIMENT.replace(
        "overrides = { num_recommendations = 5, diversity_weight = 0.5 }",
        'overrides = { candidate_sources = ["ann", "trending"] }',
    )
    with pytest.raises(ExperimentConfigError, match=r"variant 'B'.*no learned ranker"):
        Driver(settings, _shop_recommender(shop_model), text, tmp_path)
    missing = EXPERIMENT.replace(
        "overrides = { num_recommendations = 5, diversity_weight = 0.5 }",
        'overrides = { model_dir = "no-such-model" }',
    )
    with pytest.raises(ExperimentConfigError, match="cannot load model_dir"):
        Driver(settings, _shop_recommender(shop_model), missing, tmp_path)


def test_an_arm_on_the_language_model_falls_back_per_item_and_is_counted_apart(
    settings: Settings, shop_model, tmp_path: Path
):
    """B writes its reasons with the language model (here a server that always fails);
    every B item falls back to its template sentence and counts as a fallback. A keeps the
    templates: only its generic popularity reasons are fallbacks, and no A list reaches
    the server."""
    server = ChatServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    text = EXPERIMENT.replace(
        "overrides = { num_recommendations = 5, diversity_weight = 0.5 }",
        'overrides = { reason_generator = "lm" }',
    )
    driver = Driver(
        settings,
        _shop_recommender(shop_model),
        text,
        tmp_path,
        reason_lm_url=server.url,
        reason_lm_model="broken",
    )
    try:
        assert driver.settings.reason_generator == "template"  # the default stays
        users = [f"lm-user-{n}" for n in range(40)]
        lists = driver.lists([_event(n, u, "kitchen-2") for n, u in enumerate(users)])
        by_arm: dict[str, list[dict[str, Any]]] = {"A": [], "B": [], "holdout": []}
        for rec in lists:
            by_arm[rec["variant"]].append(rec)
        assert by_arm["A"]
        assert by_arm["B"]

        def fallbacks(arm: str) -> float:
            return _metric(
                driver.metrics, "streamrec_experiment_reason_fallbacks_total",
                experiment="short-lists", variant=arm,
            )  # fmt: skip

        b_items = sum(len(r["items"]) for r in by_arm["B"])
        assert fallbacks("B") == b_items
        a_popular = sum(i["reason_code"] == "popular" for r in by_arm["A"] for i in r["items"])
        assert fallbacks("A") == a_popular < sum(len(r["items"]) for r in by_arm["A"])
        outcomes = driver.metrics.reason_outcomes
        written = sum(outcomes.labels(outcome=o)._value.get() for o in OUTCOMES)
        assert written == b_items  # only B's sentences went to the writer
    finally:
        driver.close()
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_forgetting_a_user_removes_them_from_the_experiment_counts(
    settings: Settings, shop_model, tmp_path: Path
):
    driver = Driver(settings, _shop_recommender(shop_model), EXPERIMENT, tmp_path)
    try:
        users = [f"forget-user-{n}" for n in range(30)]
        driver.lists([_event(n, u, "outdoor-1") for n, u in enumerate(users)])
        before = {
            arm: driver.run(driver.store.experiment_counts("short-lists", arm, "lists"))
            for arm in ("A", "B", "holdout")
        }
        assert sum(map(len, before.values())) == len(users)
        driver.run(driver.store.forget(users[0]))
        after = {
            arm: driver.run(driver.store.experiment_counts("short-lists", arm, "lists"))
            for arm in ("A", "B", "holdout")
        }
        assert sum(map(len, after.values())) == len(users) - 1
        assert all(users[0] not in counts for counts in after.values())
    finally:
        driver.close()


def _report(settings: Settings, name: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", "experiment", "report", name, *more],
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
