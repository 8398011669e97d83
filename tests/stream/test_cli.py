"""The command line explains itself and fails with messages that name the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def streamrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def test_help_lists_every_command():
    out = streamrec("--help").stdout
    for command in (
        "demo",
        "worker",
        "train",
        "index build",
        "evaluate",
        "topics",
        "replay",
        "watch",
        "explain",
    ):
        assert command in out


def test_invalid_configuration_names_the_variable():
    proc = streamrec("worker", env={"STREAMREC_KAFKA_BOOTSTRAP": "nohostport"})
    assert proc.returncode != 0
    assert "STREAMREC_KAFKA_BOOTSTRAP" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_training_data_is_named_without_a_traceback(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("event_id,user_id,item_id,type\ne1,u1,i1,view\n")
    for command in (["train", "--out", str(tmp_path / "m")], ["replay"]):
        proc = streamrec(*command, "--events", str(events))
        assert proc.returncode != 0
        assert f"streamrec {command[0]}: " in proc.stderr
        assert "missing column" in proc.stderr
        assert "ts" in proc.stderr
        assert "Traceback" not in proc.stderr


def write_log(tmp_path: Path, items: tuple[str, ...], catalog: tuple[str, ...]) -> list[str]:
    events, titles = tmp_path / "events.csv", tmp_path / "catalog.csv"
    rows = [f"e{n},u1,{item},view,{1_790_000_000_000 + n}" for n, item in enumerate(items)]
    events.write_text("\n".join(["event_id,user_id,item_id,type,ts", *rows]) + "\n")
    titles.write_text("\n".join(["item_id,title", *(f"{i},Item {i}" for i in catalog)]) + "\n")
    return ["--events", str(events), "--catalog", str(titles)]


def test_a_catalog_that_shares_no_item_with_the_events_is_refused_before_training(tmp_path):
    files = write_log(tmp_path, ("42", "43"), ("SKU-42", "SKU-43"))
    for command in (["train", "--out", str(tmp_path / "m")], ["replay"], ["evaluate"]):
        proc = streamrec(*command, *files)
        assert proc.returncode != 0
        assert f"streamrec {command[0]}: no item of the events is in the catalog" in proc.stderr
        assert "'42'" in proc.stderr
        assert "'SKU-42'" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


def test_an_unreachable_broker_or_redis_stops_a_command_with_the_setting_to_check(tmp_path):
    files = write_log(tmp_path, ("a", "b"), ("a", "c"))
    proc = streamrec("replay", *files, env={"STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert proc.returncode != 0
    assert "1 of 2 items of the events (1 of 2 events, 50.0%) are not in the catalog" in proc.stderr
    assert "streamrec replay: cannot reach Kafka at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr
    import socket

    with socket.socket() as silent:  # accepts connections, never answers: a frozen Redis
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        frozen = f"redis://:hunter2@127.0.0.1:{silent.getsockname()[1]}/0"
        for command in (["explain", "u1"], ["forget", "u1"]):
            for url in ("redis://:hunter2@127.0.0.1:1/0", frozen):
                proc = streamrec(*command, env={"STREAMREC_REDIS_URL": url})
                assert proc.returncode != 0
                assert f"streamrec {command[0]}: cannot reach Redis" in proc.stderr
                assert "STREAMREC_REDIS_URL" in proc.stderr
                assert "hunter2" not in proc.stderr + proc.stdout
                assert "Traceback" not in proc.stderr


def test_train_on_files_warns_about_items_outside_the_catalog_and_writes_a_whole_report(
    tmp_path,
):
    from tests import shop

    events, catalog = shop.events(users=60, per_user=12, seed=1), shop.catalog()
    events.to_csv(tmp_path / "events.csv", index=False)
    catalog["tags"] = catalog["tags"].map("|".join)
    catalog[catalog["item_id"] != "running-0"].to_csv(tmp_path / "catalog.csv", index=False)
    out = tmp_path / "model"
    proc = streamrec(
        "train",
        *("--events", str(tmp_path / "events.csv"), "--catalog", str(tmp_path / "catalog.csv")),
        *("--out", str(out), "--sequence-epochs", "0"),
    )
    assert proc.returncode == 0, proc.stderr
    outside = int((events["item_id"] == "running-0").sum())
    assert (
        f"warning: 1 of {events['item_id'].nunique()} items of the events ({outside} of "
        f"{len(events)} events" in proc.stderr
    )
    # Redirected, the report stays Markdown with whole rows, not a table cut to 80 columns.
    header = "| model | recall@10 | ndcg@10 | recall@20 | ndcg@20 | mrr@20 |"
    assert any(line.startswith(header) for line in proc.stderr.splitlines()), proc.stderr
    assert "…" not in proc.stderr
    assert (out / "model.json").is_file()


def test_a_missing_model_names_the_commands_to_run(tmp_path):
    proc = streamrec("worker", env={"STREAMREC_MODEL_DIR": str(tmp_path / "nope")})
    assert proc.returncode != 0
    assert "streamrec train" in proc.stderr
    assert "STREAMREC_MODEL_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_an_unreachable_broker_names_the_address_and_the_setting(shop_model):
    proc = streamrec(
        "worker",
        env={
            "STREAMREC_MODEL_DIR": str(shop_model.model_dir),
            "STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "STREAMREC_METRICS_PORT": "0",
        },
    )
    assert proc.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in proc.stderr
    assert "STREAMREC_KAFKA_BOOTSTRAP" in proc.stderr


@pytest.mark.integration
def test_forget_and_explain_work_on_the_real_redis(redis_url):
    import asyncio
    import json

    import numpy as np
    import redis as redis_sync

    from streamrec.engine.types import Event, Recommendation, RecommendedItem
    from streamrec.stream.redis_store import RedisStore

    async def seed() -> None:
        store = RedisStore.from_url(
            redis_url, history_length=5, dedupe_ttl_s=60, recommendation_ttl_s=60
        )
        await store.apply(
            [Event("e1", "gone", "i1", "purchase", 1), Event("e2", "kept", "i2", "view", 2)]
        )
        rec = Recommendation(
            "gone",
            "e1",
            3,
            "v1",
            (
                RecommendedItem(
                    "i9",
                    1,
                    0.5,
                    "Because you bought X",
                    "similar_to_recent",
                    {"items": [{"item_id": "i1", "title": "X", "event": "purchase", "share": 1.0}]},
                ),
            ),
        )
        await store.save_results([(rec, np.ones(4, dtype=np.float32), 0)])
        await store.close()

    asyncio.run(seed())
    env = {"STREAMREC_REDIS_URL": redis_url}
    shown = streamrec("explain", "gone", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["items"][0]["evidence"]["items"][0]["title"] == "X"
    assert json.loads(streamrec("explain", "gone", "i9", env=env).stdout)["items"][0]["rank"] == 1
    absent = streamrec("explain", "gone", "i7", env=env)
    assert absent.returncode == 1
    assert "item i7 is not in the latest list of user gone" in absent.stdout

    assert streamrec("forget", "gone", env=env).returncode == 0
    keys = [k.decode() for k in redis_sync.Redis.from_url(redis_url).keys("*")]
    assert not [k for k in keys if "gone" in k]
    assert [k for k in keys if "kept" in k]
    assert streamrec("explain", "gone", env=env).returncode == 1


def test_index_build_auto_tunes_a_large_catalog_and_records_why(tmp_path, monkeypatch):
    import json
    import shutil

    import streamrec.index.tuning
    from streamrec.index.build import build_index
    from streamrec.index.faiss_index import FaissItemIndex
    from tests import shop

    model_dir = tmp_path / "m"
    shutil.copytree(shop.train(tmp_path / "trained").model_dir, model_dir)
    # The shop is small: exact search, nothing to tune, no tuning report.
    build_index(model_dir, "auto", "cpu")
    assert FaissItemIndex.load(model_dir / "index").factory == "Flat"
    assert not (model_dir / "index" / "tuning.json").exists()
    # Pretend it is large: the approximate settings are measured and the choice is saved.
    monkeypatch.setattr(streamrec.index.tuning, "FLAT_MAX_ITEMS", 50)
    lines: list[str] = []
    build_index(model_dir, "auto", "cpu", say=lines.append)
    report = json.loads((model_dir / "index" / "tuning.json").read_text())
    loaded = FaissItemIndex.load(model_dir / "index")
    assert loaded.factory == report["choice"]["factory"]
    assert loaded.params == report["choice"]["params"]
    assert report["reached"] is True
    assert report["choice"]["recall"] >= 0.95
    assert {m["factory"] for m in report["tried"]} >= {"HNSW32"}
    assert lines[-1].startswith("chose ")
    # An explicit factory is used as given and drops the stale report.
    build_index(model_dir, "Flat", "cpu")
    assert not (model_dir / "index" / "tuning.json").exists()


def test_index_build_chooses_the_index_for_the_whole_catalog_not_the_trained_items(
    tmp_path, monkeypatch
):
    """A model trained on 100 items, a catalog grown to 250: the new items are indexed
    from their text, and the index is chosen (and tuned) for 250 items."""
    import json
    import shutil

    import pandas as pd

    import streamrec.index.tuning
    from streamrec.index.build import build_index
    from streamrec.index.faiss_index import FaissItemIndex
    from tests import shop

    model_dir = tmp_path / "m"
    shutil.copytree(shop.train(tmp_path / "trained").model_dir, model_dir)
    catalog = pd.read_parquet(model_dir / "catalog.parquet")
    grown = catalog.assign(item_id=[f"new-{n}" for n in range(len(catalog))])
    more = grown.assign(item_id=[f"newer-{n}" for n in range(len(catalog))]).head(50)
    pd.concat([catalog, grown, more]).to_parquet(model_dir / "catalog.parquet")
    monkeypatch.setattr(streamrec.index.tuning, "FLAT_MAX_ITEMS", 200)
    indexed, added, factory = build_index(model_dir, "auto", "cpu")
    assert (indexed, added) == (250, 150)
    # Tuned over all 250 (with only the 100 trained items it would not have been tuned);
    # the choice may still be Flat where exact search is the fastest at this size.
    report = json.loads((model_dir / "index" / "tuning.json").read_text())
    assert report["n_items"] == 250
    assert {m["factory"] for m in report["tried"]} >= {"HNSW32"}
    assert report["choice"]["factory"] == factory
    assert len(FaissItemIndex.load(model_dir / "index")) == 250
