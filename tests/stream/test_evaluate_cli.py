"""``streamrec evaluate`` end to end on small files: the three result files and the table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from streamrec.engine.offline.evaluation_runner import MODEL_NAMES
from streamrec.stream.cli import evaluate as evaluate_cli
from tests.eval_data import shop_catalog, shop_events

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def evaluate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="streamrec")
    evaluate_cli.add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *argv])
    return int(args.func(args))


@pytest.fixture
def shop_files(tmp_path: Path) -> tuple[Path, Path]:
    events, catalog = tmp_path / "events.csv", tmp_path / "catalog.csv"
    shop_events(users=40, per_user=10).to_csv(events, index=False)
    shop_catalog().to_csv(catalog, index=False)
    return events, catalog


def test_the_default_models_are_every_model_the_runner_knows() -> None:
    assert evaluate_cli.DEFAULT_MODELS.split(",") == list(MODEL_NAMES)


def test_evaluate_writes_markdown_json_and_a_chart_with_every_model(
    shop_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, catalog = shop_files
    out = tmp_path / "results"
    quick = ["--sasrec-epochs", "3", "--sasrec-threads", "1", "--sequence-epochs", "5"]
    argv = ["--events", str(events), "--catalog", str(catalog), "--out", str(out), *quick]
    assert evaluate(*argv) == 0
    table = (out / "results.md").read_text(encoding="utf-8")
    for name in MODEL_NAMES:
        assert f"| {name} |" in table
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(data["models"]) == set(MODEL_NAMES)
    # full ranking: every catalog item, never a sample of negatives
    assert {m["n_items"] for m in data["models"].values()} == {len(shop_catalog())}
    assert data["machine"]
    assert capsys.readouterr().out == table  # the table is printed on stdout


def test_a_subset_of_models_and_the_time_protocol(
    shop_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, _ = shop_files
    out = tmp_path / "time"
    argv = ["--events", str(events), "--protocol", "time", "--test-fraction", "0.3"]
    assert evaluate(*argv, "--models", "popular,item-knn", "--out", str(out)) == 0
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(data["models"]) == ["popular", "item-knn"]
    assert data["protocol"] == "time"
    assert data["test_fraction"] == 0.3
    assert "| ease |" not in capsys.readouterr().out


def test_a_session_log_is_evaluated_with_each_session_as_a_user(tmp_path: Path) -> None:
    events = shop_events(users=30, per_user=8)
    log = tmp_path / "views.csv"
    pd.DataFrame(
        {
            "session_id": events["user_id"].str.removeprefix("user-"),
            "user_id": "NA",
            "item_id": events["item_id"],
            "timeframe": (events["ts"] - events["ts"].min()).astype(int),
            "eventdate": "2016-05-01",
        }
    ).to_csv(log, sep=";", index=False)
    out = tmp_path / "sessions"
    assert evaluate("--sessions", str(log), "--models", "popular,ease", "--out", str(out)) == 0
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["dataset"] == "views.csv"
    assert data["n_test_users"] == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "ours,gru4rec"], "--models must name some of"),
        (["--test-fraction", "0.3"], "--test-fraction applies to --protocol time"),
        (["--users", "10"], "--users, --rate, --set and --model apply to --replay only"),
        (
            ["--set", "exclude_seen=false"],
            "--users, --rate, --set and --model apply to --replay only",
        ),
        (["--replay", "--models", "ours,ease"], "--models does not apply to --replay"),
        (["--replay", "--users", "0"], "--users must be >= 1, got 0"),
        (["--replay", "--set", "near_duplicate_cosine"], "--set must be NAME=VALUE"),
    ],
)
def test_bad_flags_stop_with_a_message_naming_the_flag(
    shop_files: tuple[Path, Path], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        evaluate("--events", str(shop_files[0]), *argv)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="nope.csv does not exist"):
        evaluate("--events", str(tmp_path / "nope.csv"))


def test_one_data_source_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        evaluate("--models", "popular")
    assert (
        "one of the arguments --dataset --events --sessions is required" in capsys.readouterr().err
    )
