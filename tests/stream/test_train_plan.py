"""``streamrec train`` says what it will train and for about how long, then shows one bar
that goes through every stage of training."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from streamrec.engine.offline.hybrid_training import TRAINING_STAGES, train_model
from streamrec.engine.offline.training import TrainParams
from streamrec.engine.serving.sequential import SequenceParams
from streamrec.stream.cli.progress import overall_position
from streamrec.stream.cli.train import (
    EPOCH_SECONDS_PER_EVENT,
    FIXED_SECONDS,
    Estimate,
    TrainingPlan,
    estimate_duration,
    format_duration,
    plan_text,
)

ROOT = Path(__file__).resolve().parents[2]

ML_100K = TrainingPlan(
    source="MovieLens-100K",
    n_events=100_000,
    n_users=943,
    n_items=1_682,
    catalog_items=1_682,
    sequence_epochs=200,
    patience=10,
    seed=42,
)


def _row(text: str, name: str) -> str:
    """The value of one row of the plan."""
    found = re.search(rf"^  {re.escape(name)} +(.*)$", text, flags=re.MULTILINE)
    assert found is not None, text
    return found[1]


def test_plan_names_the_data_the_parts_the_seed_and_the_estimate():
    text = plan_text(ML_100K)
    assert text.startswith("streamrec train will train:\n")
    assert _row(text, "events") == "100,000 from MovieLens-100K"
    assert _row(text, "users") == "943"
    assert _row(text, "items") == "1,682 in the events"
    assert _row(text, "catalog").startswith("1,682 items")
    assert _row(text, "sequential encoder").startswith(
        "trains, at most 200 epochs, early stopping after 10 epochs"
    )
    assert _row(text, "seed") == "42"
    estimate = _row(text, "estimated time")
    assert estimate.startswith("about 1 min 6 s plus 25 s per encoder epoch: at most 2 h 48 min")
    assert estimate.endswith("(an estimate for a 2-core machine)")


def test_plan_without_catalog_or_encoder_says_so():
    plan = TrainingPlan("events.csv", 300, 30, 20, None, 0, 10, 7)
    text = plan_text(plan)
    assert _row(text, "events") == "300 from events.csv"
    assert _row(text, "catalog").startswith("none")
    assert _row(text, "sequential encoder") == "off (--sequence-epochs 0): co-occurrence model only"
    assert _row(text, "seed") == "7"
    assert _row(text, "estimated time") == "about 1 s (an estimate for a 2-core machine)"


def test_estimate_is_the_calibrated_run_on_movielens():
    """`streamrec train --dataset ml-100k --sequence-epochs 0` took 69.5 s on 2 cores,
    about 4 s of it before the plan is printed."""
    assert estimate_duration(100_000, 0) == Estimate(66.0, 0.0, 0)
    assert estimate_duration(100_000, 0).most_s == 66.0


def test_estimate_scales_with_events_and_epochs():
    small, large = estimate_duration(50_000, 10), estimate_duration(200_000, 10)
    assert large.base_s - FIXED_SECONDS == pytest.approx(4 * (small.base_s - FIXED_SECONDS))
    assert large.epoch_s == pytest.approx(4 * small.epoch_s)
    assert small.epoch_s == pytest.approx(50_000 * EPOCH_SECONDS_PER_EVENT)
    # the validation run to the cap, then a refit as long
    twenty = estimate_duration(50_000, 20)
    assert twenty.most_s - small.most_s == pytest.approx(2 * 10 * small.epoch_s)
    assert estimate_duration(50_000, 0).epoch_s == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (45, "45 s"),
        (59.6, "1 min"),
        (67, "1 min 7 s"),
        (120, "2 min"),
        (3599, "59 min 59 s"),
        (3600, "1 h"),
        (8100, "2 h 15 min"),
    ],
)
def test_format_duration(seconds: float, text: str):
    assert format_duration(seconds) == text


def test_overall_position_goes_through_the_stages_in_order():
    stages = ["validate", "fit", "adaptation"]
    assert overall_position(stages, "validate", 0, 120) == 0.0
    assert overall_position(stages, "validate", 60, 120) == 0.5
    assert overall_position(stages, "fit", 1, 2) == 1.5
    assert overall_position(stages, "adaptation", 16, 16) == 3.0
    assert overall_position(stages, "adaptation", 5, 0) == 2.0  # an empty stage starts it
    assert overall_position(stages, "elsewhere", 1, 1) == -1.0


def _two_clusters(users: int = 24, per_user: int = 8) -> pd.DataFrame:
    """Users 0..n/2 read books b0-b9, the others watch films f0-f9, one event a second."""
    rows = []
    for u in range(users):
        kind = "b" if u < users // 2 else "f"
        for k in range(per_user):
            n = len(rows)
            item = f"{kind}{(u + k) % 10}"
            event = ("view", "click", "add_to_cart", "purchase")[n % 4]
            rows.append((f"e{n}", f"u{u}", item, event, 1_790_000_000_000 + 1000 * n))
    return pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "type", "ts"])


def test_train_model_reports_every_stage_in_the_listed_order():
    seen: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        assert 0 <= done <= total
        if not seen or seen[-1] != stage:
            seen.append(stage)

    train_model(
        _two_clusters(),
        None,
        TrainParams(dim=4, windows=(5,), shifts=(1.0,), eig_powers=(0.5,), decays=(0.75,)),
        SequenceParams(dim=8, heads=2, layers=1, max_len=8, max_epochs=2, patience=1),
        seed=0,
        progress=progress,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert len(seen) == len(set(seen)), seen  # each stage once, not interleaved
    assert seen == [s for s in TRAINING_STAGES if s in seen]
    optional = {"sequence: refit"}  # only when the encoder wins weight > 0
    assert set(TRAINING_STAGES) - set(seen) <= optional


def test_cli_prints_the_plan_then_finishes_the_bar_of_every_stage(tmp_path: Path):
    _two_clusters().to_csv(tmp_path / "events.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "train",
            *("--events", str(tmp_path / "events.csv"), "--out", str(tmp_path / "model")),
            *("--dim", "4", "--sequence-epochs", "2", "--sequence-dim", "8"),
            *("--sequence-length", "8", "--seed", "3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "streamrec train will train:" in err
    assert _row(err, "events") == f"192 from {tmp_path / 'events.csv'}"
    assert _row(err, "users") == "24"
    assert _row(err, "catalog").startswith("none")
    assert _row(err, "sequential encoder").startswith("trains, at most 2 epochs")
    assert _row(err, "seed") == "3"
    assert "an estimate for a 2-core machine" in _row(err, "estimated time")
    assert err.index("streamrec train will train:") < err.index("\ntraining ")
    # the overall bar went through all the stages; each stage's bar ended full
    stages = len(TRAINING_STAGES)
    assert re.search(rf"^training .* {stages}/{stages} stages", err, flags=re.MULTILINE), err
    for stage in ("validate", "fit", "sequence: epochs", "adaptation", "ranker"):
        found = re.search(rf"^{re.escape(stage)} +\S+ (\d+)/(\d+)", err, flags=re.MULTILINE)
        assert found is not None, (stage, err)
        assert found[1] == found[2], (stage, found[0])
    assert (tmp_path / "model" / "model.json").is_file()


def test_the_plan_names_the_encoders_time_budget_and_caps_the_estimate() -> None:
    plan = TrainingPlan(
        source="MovieLens-100K", n_events=100_000, n_users=943, n_items=1682,
        catalog_items=1682, sequence_epochs=200, patience=10, seed=42, sequence_minutes=3.0,
    )  # fmt: skip
    text = plan_text(plan)
    assert "within 3 min (--sequence-minutes)" in text
    unlimited = plan_text(replace(plan, sequence_minutes=0.0))
    assert "--sequence-minutes" not in unlimited
    est = estimate_duration(plan.n_events, plan.sequence_epochs)
    assert f"at most {format_duration(est.base_s + 180)}" in text
    assert f"at most {format_duration(est.most_s)}" in unlimited
