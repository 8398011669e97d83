"""Specification of the data loaders: MovieLens-100K, event logs, catalogs, session logs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.engine.offline.datasets import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    DatasetError,
    load_catalog,
    load_event_log,
    load_movielens_100k,
    load_session_log,
    movielens_100k_dir,
    training_data_warnings,
)


def _has_movielens() -> bool:
    try:
        movielens_100k_dir()
    except DatasetError:
        return False
    return True


needs_movielens = pytest.mark.skipif(
    not _has_movielens(),
    reason="MovieLens-100K comes with recbole: run `pip install --no-deps recbole`",
)


# --- MovieLens-100K --------------------------------------------------------------------------


@needs_movielens
def test_movielens_events_have_the_engine_schema_and_size() -> None:
    events = load_movielens_100k().events
    assert tuple(events.columns) == EVENT_COLUMNS
    assert len(events) == 100_000
    assert events["user_id"].nunique() == 943
    assert events["item_id"].nunique() == 1682
    assert events["event_id"].is_unique
    assert events["event_id"].str.match(r"^ml100k-\d+$").all()
    assert events["ts"].dtype == np.int64
    assert events["ts"].is_monotonic_increasing


@needs_movielens
def test_movielens_ratings_map_to_event_types_by_strength() -> None:
    counts = load_movielens_100k().events["type"].value_counts().to_dict()
    # ratings 1+2 -> view, 3 -> click, 4 -> add_to_cart, 5 -> purchase
    assert counts == {"view": 6110 + 11370, "click": 27145, "add_to_cart": 34174, "purchase": 21201}


@needs_movielens
def test_movielens_first_rating_row_is_kept_verbatim() -> None:
    events = load_movielens_100k().events.set_index("event_id")
    first = events.loc["ml100k-0"]  # 196  242  3  881250949
    assert (first["user_id"], first["item_id"], first["type"], first["ts"]) == (
        "196",
        "242",
        "click",
        881250949000,
    )


@needs_movielens
def test_movielens_timestamp_ties_keep_file_order() -> None:
    events = load_movielens_100k().events
    rows = events["event_id"].str.removeprefix("ml100k-").astype(int)
    same_ts = events["ts"].to_numpy()[1:] == events["ts"].to_numpy()[:-1]
    assert same_ts.any()
    assert (np.diff(rows.to_numpy())[same_ts] > 0).all()


@needs_movielens
def test_movielens_catalog_has_genres_and_year() -> None:
    catalog = load_movielens_100k().catalog.set_index("item_id")
    assert len(catalog) == 1682
    assert tuple(["item_id", *catalog.columns]) == CATALOG_COLUMNS
    toy = catalog.loc["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["category"] == "Animation"
    assert toy["tags"] == ["Animation", "Children's", "Comedy", "1995"]
    assert toy["description"] == "1995"
    assert np.isnan(toy["price"])
    assert toy["available"]
    unknown = catalog.loc["267"]  # title and year are "unkonwn" in the file
    assert unknown["tags"] == ["unknown"]
    assert unknown["description"] == ""


@needs_movielens
def test_locating_movielens_does_not_import_recbole() -> None:
    code = (
        "import sys; from streamrec.engine.offline.datasets import movielens_100k_dir; "
        "movielens_100k_dir(); "
        "print('recbole' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_recbole_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="pip install --no-deps recbole"):
        movielens_100k_dir()


# --- event logs ------------------------------------------------------------------------------


def _event_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["u1", "u2", "u1"],
            "item_id": ["007", "b", "c"],
            "type": ["view", "purchase", "click"],
            "ts": [300, 100, 200],
            "extra": [1, 2, 3],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_event_log_loads_csv_and_parquet_sorted_by_time(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    frame = _event_frame()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    events = load_event_log(path)
    assert tuple(events.columns) == EVENT_COLUMNS
    assert events["event_id"].tolist() == ["e2", "e3", "e1"]
    assert events["item_id"].tolist() == ["b", "c", "007"]  # ids stay strings
    assert events["ts"].dtype == np.int64


def test_event_log_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    _event_frame().drop(columns=["type"]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="missing column.*type"):
        load_event_log(path)


def test_event_log_names_an_unknown_event_type_and_its_row(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    frame = _event_frame()
    frame.loc[1, "type"] = "like"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="row 1 has 'like'"):
        load_event_log(path)


def test_event_log_rejects_non_integer_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    frame = _event_frame().astype({"ts": str})
    frame.loc[2, "ts"] = "yesterday"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="'ts' must be integer epoch milliseconds or an ISO"):
        load_event_log(path)


def test_event_log_rejects_blank_ids_and_a_file_with_only_a_header(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    frame = _event_frame()
    frame.loc[1, "user_id"] = "   "  # the Kafka contract needs a non-space character too
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="'user_id' must be a non-empty string, row 1"):
        load_event_log(path)
    _event_frame().iloc[:0].to_csv(path, index=False)
    with pytest.raises(DatasetError, match="no events"):
        load_event_log(path)


def test_a_catalog_with_a_blank_title_is_refused_as_the_worker_would(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    pd.DataFrame({"item_id": ["a", "b"], "title": ["Lamp", "  "]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="'title' must be a non-empty string, row 1"):
        load_catalog(path)


def test_event_log_rejects_unknown_file_kinds_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text("[]")
    with pytest.raises(DatasetError, match="expected .csv or .parquet"):
        load_event_log(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_event_log(tmp_path / "nope.csv")


# --- catalogs --------------------------------------------------------------------------------


def test_catalog_csv_accepts_json_and_pipe_separated_tags(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Red shoe", "Blue hat", "Plain"],
            "category": ["shoes", "hats", ""],
            "tags": [json.dumps(["red", "leather"]), "blue|wool", ""],
            "price": ["19.9", "", "5"],
            "description": ["A red shoe", "", ""],
            "available": ["true", "false", "1"],
        }
    ).to_csv(path, index=False)
    catalog = load_catalog(path)
    assert tuple(catalog.columns) == CATALOG_COLUMNS
    assert catalog["tags"].tolist() == [["red", "leather"], ["blue", "wool"], []]
    assert catalog["price"].iloc[0] == pytest.approx(19.9)
    assert np.isnan(catalog["price"].iloc[1])
    assert catalog["available"].tolist() == [True, False, True]


def test_catalog_parquet_with_list_tags_and_defaults_for_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pd.DataFrame({"item_id": ["a"], "title": ["T"], "tags": [["x", "y"]]}).to_parquet(path)
    catalog = load_catalog(path)
    row = catalog.iloc[0]
    assert row["tags"] == ["x", "y"]
    assert (row["category"], row["description"], bool(row["available"])) == ("", "", True)
    assert np.isnan(row["price"])


def test_catalog_rejects_duplicate_ids_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    pd.DataFrame({"item_id": ["a", "a"], "title": ["x", "y"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="'item_id' must be unique"):
        load_catalog(path)
    pd.DataFrame({"item_id": ["a"], "title": ["x"], "price": ["cheap"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="'price' must be a number, row 0 has 'cheap'"):
        load_catalog(path)
    pd.DataFrame({"item_id": ["a"], "name": ["x"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="missing column.*title"):
        load_catalog(path)


# --- session logs ----------------------------------------------------------------------------


def test_session_log_becomes_view_events(tmp_path: Path) -> None:
    path = tmp_path / "train-item-views.csv"
    path.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;81766;526309;2016-05-09\n"
        "1;NA;31331;1031018;2016-05-09\n"
        "2;7;32118;243569;2016-05-08\n"
    )
    events = load_session_log(path)
    assert tuple(events.columns) == EVENT_COLUMNS
    assert set(events["type"]) == {"view"}
    midnight = int(datetime(2016, 5, 9, tzinfo=UTC).timestamp() * 1000)
    by_id = events.set_index("event_id")
    assert by_id.loc["train-item-views-0", "ts"] == midnight + 526309
    assert by_id.loc["train-item-views-0", "user_id"] == "session-1"  # anonymous session
    assert by_id.loc["train-item-views-2", "user_id"] == "7"
    assert events["event_id"].iloc[0] == "train-item-views-2"  # the earliest day comes first


def test_session_log_names_a_bad_date(tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;;5;10;09/05/2016\n")
    with pytest.raises(DatasetError, match="'eventdate' must be YYYY-MM-DD, row 0"):
        load_session_log(path)


def test_event_log_converts_datetime_timestamps_to_epoch_ms(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    frame = _event_frame()
    start = pd.Timestamp("2024-01-01")
    frame["ts"] = [start + pd.Timedelta(milliseconds=ms) for ms in (300, 0, 1000)]
    frame.to_parquet(path)
    events = load_event_log(path)
    midnight = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert events["ts"].tolist() == [midnight, midnight + 300, midnight + 1000]


def test_event_log_reads_iso_8601_times_in_a_csv_as_utc_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    frame = _event_frame()
    frame["ts"] = ["2026-09-06T05:27:51.081Z", "2026-09-06T07:27:51.081+02:00", "2026-09-06"]
    frame.to_csv(path, index=False)
    events = load_event_log(path)
    noon = int(datetime(2026, 9, 6, 5, 27, 51, 81000, tzinfo=UTC).timestamp() * 1000)
    midnight = int(datetime(2026, 9, 6, tzinfo=UTC).timestamp() * 1000)
    assert events["ts"].tolist() == [midnight, noon, noon]  # sorted by time, ties in order
    assert events["event_id"].tolist() == ["e3", "e1", "e2"]


def _log(items: list[str], ts: int = 1_790_000_000_000, users: int = 60) -> pd.DataFrame:
    """Events on ``items`` spread over ``users`` users, each with two or more events."""
    n = len(items)
    return pd.DataFrame(
        {"user_id": [f"u{i % users}" for i in range(n)], "item_id": items, "ts": ts}
    )


def test_events_on_items_outside_the_catalog_are_counted_and_named() -> None:
    events = _log(["a", "b", "b", "c"] * 30)
    catalog = pd.DataFrame({"item_id": ["a", "c", "d"]})
    (warning,) = training_data_warnings(events, catalog)
    assert warning.startswith("1 of 3 items of the events (60 of 120 events, 50.0%) are not")
    assert "'b'" in warning
    assert "dead-letters" in warning
    assert training_data_warnings(events, None) == []  # nothing to compare with
    without_b = _log(["a", "c"] * 60)
    assert training_data_warnings(without_b, catalog) == []


def test_a_catalog_sharing_no_item_with_the_events_is_refused() -> None:
    events = _log(["42", "43"] * 60)
    with pytest.raises(DatasetError, match="the events name items like '42', the catalog 'SKU-42'"):
        training_data_warnings(events, pd.DataFrame({"item_id": ["SKU-42", "SKU-43"]}))


def test_timestamps_in_seconds_are_flagged() -> None:
    events = _log(["a", "b"] * 60, ts=1_790_000_000)  # 2026 in seconds
    (warning,) = training_data_warnings(events, None)
    assert "looks like epoch seconds" in warning
    assert "1970-01-21" in warning
    assert training_data_warnings(events.assign(ts=1_790_000_000_000), None) == []


def test_too_few_users_to_validate_on_are_flagged() -> None:
    (warning,) = training_data_warnings(_log(["a", "b"] * 49, users=49), None)
    assert warning.startswith("only 49 user(s) have two or more events")
    assert training_data_warnings(_log(["a", "b"] * 50, users=50), None) == []
    one_each = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "ts": 1})
    assert "only 0 user(s)" in " ".join(training_data_warnings(one_each, None))
