"""Training validates a session log as the session protocol tests it: by time.

Sessions are users that never come back, so holding out each session's last event and
fitting on its earlier ones (leave-last-out) validates on sessions the model has partly
seen. With ``validation="session"`` every training step (the co-occurrence grid, the
encoder's early stopping and weight, the adaptation, the ranker) validates on the last
sessions by start time, never trained on, each ranked from its earlier events.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from streamrec.engine.offline.evaluation import leave_last_out, session_split
from streamrec.engine.offline.hybrid_training import train_model
from streamrec.engine.offline.sequential_training import holdout_split
from streamrec.engine.offline.training import (
    VALIDATION_FRACTION,
    TrainParams,
    train_item_model,
    validation_split,
)
from streamrec.engine.serving.sequential import SequenceParams
from tests.sparse_shop import sparse_sessions

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: One grid point: these tests are about which events validate, not about tuning.
PARAMS = TrainParams(
    dim=8, windows=(5,), shifts=(1.0,), eig_powers=(0.5,), decays=(0.75,),
    popularity_weights=(0.25,),
)  # fmt: skip


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return sparse_sessions(themes=10, per_theme=20, sessions=400, test_sessions=50).events


def test_session_validation_is_the_session_split_of_the_training_events(events):
    split = validation_split(events, "session")
    expected = session_split(events, VALIDATION_FRACTION)
    pd.testing.assert_frame_equal(split.train, expected.train)
    pd.testing.assert_frame_equal(split.test, expected.test)
    assert split.kind == "session"
    # Every validation session starts after every training session's events.
    assert split.context is not None
    first = pd.concat([split.context, split.test]).groupby("user_id")["ts"].min()
    assert first.min() > split.train["ts"].max()
    assert set(split.train["user_id"]).isdisjoint(split.test["user_id"])


def test_leave_last_out_stays_the_default_split(events):
    split = validation_split(events, "leave-last-out")
    pd.testing.assert_frame_equal(split.test, leave_last_out(events).test)
    _, report = train_item_model(events, None, PARAMS, seed=0, now=NOW)
    assert report.validation_protocol == "leave-last-out"
    assert report.validation_model is not None
    # Fitted without each user's last event only.
    assert report.validation_model.popularity.sum() == len(leave_last_out(events).train)


def test_the_session_share_held_out_is_a_setting(events):
    split = validation_split(events, "session", 0.3)
    pd.testing.assert_frame_equal(split.test, session_split(events, 0.3).test)
    _, report = train_item_model(
        events, None, PARAMS, seed=0, now=NOW, validation="session", validation_fraction=0.3
    )
    assert report.validation_model is not None
    assert report.validation_model.popularity.sum() == len(split.train)


def test_an_unknown_validation_is_refused(events):
    with pytest.raises(ValueError, match="validation must be one of leave-last-out, session"):
        validation_split(events, "random")  # type: ignore[arg-type]


def test_the_encoder_validates_on_unseen_sessions_from_their_earlier_events(events):
    split = validation_split(events, "session")
    index = {item: row for row, item in enumerate(sorted(events["item_id"].unique()))}
    train_part, held = holdout_split(split, index)

    # The encoder trains on the sessions before the cut and nothing else.
    assert sum(len(rows) for rows in train_part.rows) == len(split.train)
    assert split.context is not None
    users = split.test["user_id"]
    for user, history, target in zip(users, held.history, held.targets, strict=True):
        session = events[events["user_id"] == user].sort_values("ts", kind="stable")
        rows = [index[i] for i in session["item_id"]]
        assert history.tolist() == rows[:-1]  # its earlier events, in order
        assert target == rows[-1]  # its last event
    assert len(held.targets) == len(split.test)


def test_the_linear_model_is_tuned_on_the_sessions_before_the_cut(events):
    _, report = train_item_model(events, None, PARAMS, seed=0, now=NOW, validation="session")
    assert report.validation_protocol == "session"
    assert report.validation_model is not None
    split = session_split(events, VALIDATION_FRACTION)
    # Fitted on exactly the training sessions: no event of a validation session counts.
    assert report.validation_model.popularity.sum() == len(split.train)
    assert report.validation is not None
    assert "Held out: the last sessions by time" in report.to_markdown()


def test_the_encoder_steps_validate_on_the_targets_the_linear_tuning_used(events):
    sequence = SequenceParams(dim=8, heads=2, layers=1, max_len=8, max_epochs=2, patience=1)
    runs = {}
    for validation in ("leave-last-out", "session"):
        _, report, seq = train_model(
            events, None, PARAMS, sequence, seed=0, now=NOW, validation=validation
        )
        assert report.validation is not None
        assert seq is not None
        runs[validation] = (report, seq)
    for report, seq in runs.values():
        # The encoder's weight search scores weight 0 (the linear model alone) on the
        # same targets and histories the linear model's tuning used.
        weight_zero = dict(seq.weight_scores)[0.0]
        assert weight_zero == pytest.approx(report.validation["ndcg@10"].mean, abs=1e-9)
    assert runs["session"][0].validation_protocol == "session"
    assert runs["leave-last-out"][0].validation_protocol == "leave-last-out"
    assert runs["session"][0].validation_model.popularity.sum() != (
        runs["leave-last-out"][0].validation_model.popularity.sum()
    )


def test_cli_trains_a_session_log_and_says_how_it_validates(tmp_path: Path, events):
    log = tmp_path / "views.csv"
    sessions = events.assign(
        session_id=events["user_id"].str.removeprefix("session-"),
        user_id="",
        timeframe=events["ts"] - 1_750_000_000_000,
        eventdate="2025-06-15",
    )
    sessions[["session_id", "user_id", "item_id", "timeframe", "eventdate"]].to_csv(
        log, sep=";", index=False
    )
    proc = subprocess.run(
        [
            sys.executable, "-m", "streamrec", "train", "--sessions", str(log),
            "--out", str(tmp_path / "model"), "--dim", "8", "--sequence-epochs", "0",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tuned on the last 20% of sessions by time" in proc.stderr
    assert (tmp_path / "model" / "model.json").is_file()
