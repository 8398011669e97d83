"""Loading event logs and catalogs into the engine's two tables.

Events (one row per interaction, sorted by time; ties keep file order):

=========  =======  ==========================================================
column     dtype    meaning
=========  =======  ==========================================================
event_id   str      unique id of the event
user_id    str      who
item_id    str      what
type       str      one of ``view``, ``click``, ``add_to_cart``, ``purchase``
ts         int64    epoch milliseconds
=========  =======  ==========================================================

Catalog (one row per item): ``item_id`` (str), ``title`` (str), ``category`` (str),
``tags`` (list[str]), ``price`` (float, NaN when unknown), ``description`` (str),
``available`` (bool).

Errors::

    DatasetError (ValueError)     a file is missing, of an unknown kind, or its content is
                                  not in the expected schema; the message names the file,
                                  the column and what was expected

Example:
    >>> data = load_movielens_100k()  # doctest: +SKIP
    >>> data.events.columns.tolist()  # doctest: +SKIP
    ['event_id', 'user_id', 'item_id', 'type', 'ts']
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.engine.serving.user_embedding import EVENT_TYPES

__all__ = [
    "CATALOG_COLUMNS",
    "EVENT_COLUMNS",
    "MOVIELENS_RATING_TO_TYPE",
    "Dataset",
    "DatasetError",
    "load_catalog",
    "load_event_log",
    "load_movielens_100k",
    "load_session_log",
    "movielens_100k_dir",
    "movielens_title",
    "training_data_warnings",
    "validate_catalog",
    "validate_events",
]

logger = logging.getLogger(__name__)

EVENT_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "type", "ts")
CATALOG_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "category",
    "tags",
    "price",
    "description",
    "available",
)

#: MovieLens has explicit ratings, the engine implicit events of growing strength:
#: a rating of 1 or 2 becomes ``view``, 3 ``click``, 4 ``add_to_cart`` and 5 ``purchase``.
MOVIELENS_RATING_TO_TYPE: dict[int, str] = {
    1: "view",
    2: "view",
    3: "click",
    4: "add_to_cart",
    5: "purchase",
}

_YEAR = re.compile(r"^\d{4}$")
#: Articles MovieLens moves behind a comma ("Right Stuff, The"), as found in ML-100K:
#: English, French, Italian, Spanish, German, Swedish ("Sjunde inseglet, Det") and
#: Portuguese ("Convento, O"). "L'" joins the next word without a space.
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+), (?P<article>The|A|An|Les|La|Le|L'|Il|El|Das|Der|Die|Det|O)$"
)
#: A title and the parenthesised parts at its end: "(1983)", "(Hussard sur le toit, Le)".
_TITLE_TAIL = re.compile(r"^(?P<main>.*?)(?P<tail>(?: \([^()]*\))*)$")
_PARENTHESISED = re.compile(r" \(([^()]*)\)")
_SESSION_COLUMNS = ("session_id", "user_id", "item_id", "timeframe", "eventdate")


class DatasetError(ValueError):
    """A data file is missing, of an unsupported kind, or not in the expected schema."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Events and catalog of one data set.

    Attributes:
        events: The events table (see the module docstring), sorted by time.
        catalog: The catalog table, one row per item.
    """

    events: pd.DataFrame
    catalog: pd.DataFrame


def movielens_100k_dir() -> Path:
    """The folder holding MovieLens-100K as shipped inside the ``recbole`` package.

    The package is located without importing it (importing recbole pulls in torch).

    Returns:
        Path of ``recbole/dataset_example/ml-100k/``.

    Raises:
        DatasetError: recbole is not installed, or its copy lacks the data.
    """
    spec = importlib.util.find_spec("recbole")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        msg = (
            "MovieLens-100K is read from the recbole package, which is not installed; "
            "run `pip install --no-deps recbole`"
        )
        raise DatasetError(msg)
    folder = Path(locations[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        msg = (
            f"expected MovieLens-100K at {folder}, but ml-100k.inter is not there; "
            "reinstall with `pip install --no-deps recbole`"
        )
        raise DatasetError(msg)
    return folder


def _article_first(name: str) -> str:
    found = _TRAILING_ARTICLE.match(name)
    if found is None:
        return name
    article = found["article"]
    space = "" if article.endswith("'") else " "
    return f"{article}{space}{found['body']}"


def movielens_title(title: str, year: str = "") -> str:
    """A MovieLens title as people write it: the article in front, the year at the end.

    MovieLens files write "Right Stuff, The (1983)"; the recbole copy of ML-100K keeps
    the year in its own column ("Right Stuff, The" and "1983"). A trailing article
    (", The", ", A", ", La", ", L'", ...) moves to the front of the title and of each
    parenthesised alternative title; ``year`` (four digits) is appended in parentheses
    unless the title already ends with a year.

    Args:
        title: The title as MovieLens writes it.
        year: The release year, or "" (anything but four digits is ignored).

    Returns:
        The display title.

    Example:
        >>> movielens_title("Right Stuff, The", "1983")
        'The Right Stuff (1983)'
        >>> movielens_title("Star Maker, The (Uomo delle stelle, L')")
        "The Star Maker (L'Uomo delle stelle)"
    """
    title = title.strip()
    found = _TITLE_TAIL.match(title)
    main, tail = (found["main"], found["tail"]) if found is not None else (title, "")
    tail = _PARENTHESISED.sub(lambda m: f" ({_article_first(m[1])})", tail)
    shown = _article_first(main) + tail
    if _YEAR.match(year) and not re.search(r"\(\d{4}\)$", shown):
        shown = f"{shown} ({year})"
    return shown


def _read_atomic(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
    )
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    return frame


def _sort_events(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values("ts", kind="stable").reset_index(drop=True)


def load_movielens_100k(folder: Path | None = None) -> Dataset:
    """MovieLens-100K as engine events and catalog.

    Ratings become events by :data:`MOVIELENS_RATING_TO_TYPE`; ``ts`` is the rating's
    timestamp in milliseconds; ``event_id`` is ``"ml100k-<row>"`` with the 0-based row of
    ``ml-100k.inter``. Events are sorted by (ts, file order): many users rated several
    films in the same second. The catalog's ``title`` is :func:`movielens_title` of the
    title and release year ("The Right Stuff (1983)"), ``category`` the first genre, ``tags`` all
    genres plus the release year, ``description`` the release year ("" when unknown),
    ``price`` NaN and ``available`` True.

    Args:
        folder: Where the ``ml-100k.*`` files are; default :func:`movielens_100k_dir`.

    Returns:
        100,000 events by 943 users on 1,682 items, and the 1,682-item catalog.

    Raises:
        DatasetError: The files are missing or malformed.
    """
    folder = movielens_100k_dir() if folder is None else folder
    inter_path = folder / "ml-100k.inter"
    item_path = folder / "ml-100k.item"
    for p in (inter_path, item_path):
        if not p.is_file():
            msg = f"MovieLens-100K file {p} does not exist"
            raise DatasetError(msg)
    inter = _read_atomic(inter_path)
    _require_columns(inter, ("user_id", "item_id", "rating", "timestamp"), inter_path)
    try:
        ratings = inter["rating"].astype(float).astype(int)
        ts = inter["timestamp"].astype(float).astype(np.int64) * 1000
    except ValueError as exc:
        msg = f"{inter_path}: rating and timestamp must be numbers"
        raise DatasetError(msg) from exc
    types = ratings.map(MOVIELENS_RATING_TO_TYPE)
    if types.isna().any():
        bad = ratings[types.isna()].iloc[0]
        msg = f"{inter_path}: column 'rating' must be 1-5, got {bad!r}"
        raise DatasetError(msg)
    events = pd.DataFrame(
        {
            "event_id": [f"ml100k-{i}" for i in range(len(inter))],
            "user_id": inter["user_id"].astype(str),
            "item_id": inter["item_id"].astype(str),
            "type": types.astype(str),
            "ts": ts.astype(np.int64),
        }
    )
    items = _read_atomic(item_path)
    _require_columns(items, ("item_id", "movie_title", "release_year", "class"), item_path)
    genres = [g.split() for g in items["class"]]
    years = [y if _YEAR.match(y) else "" for y in items["release_year"]]
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str),
            "title": [
                movielens_title(t, y)
                for t, y in zip(items["movie_title"].astype(str), years, strict=True)
            ],
            "category": [g[0] if g else "" for g in genres],
            "tags": [g + ([y] if y else []) for g, y in zip(genres, years, strict=True)],
            "price": np.full(len(items), np.nan),
            "description": years,
            "available": np.ones(len(items), dtype=bool),
        }
    )
    return Dataset(events=_sort_events(events), catalog=validate_catalog(catalog, item_path))


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], source: Path | str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        msg = (
            f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}, "
            f"got {', '.join(map(str, frame.columns))}"
        )
        raise DatasetError(msg)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        msg = f"{path} does not exist"
        raise DatasetError(msg)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        msg = f"{path}: cannot read as {suffix[1:]}: {exc}"
        raise DatasetError(msg) from exc
    msg = f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet"
    raise DatasetError(msg)


def _id_column(frame: pd.DataFrame, column: str, source: Path | str) -> pd.Series:
    """The column as strings; every value must hold a non-space character, as the Kafka
    contracts require (a catalog that trains must also serve)."""
    values = frame[column]
    blank = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        msg = f"{source}: column {column!r} must be a non-empty string, row {row} is empty"
        raise DatasetError(msg)
    return values.astype(str)


def validate_events(frame: pd.DataFrame, source: Path | str = "events") -> pd.DataFrame:
    """Check and normalise an events table.

    Args:
        frame: A table with at least the event columns (others are dropped).
        source: Named in error messages.

    Returns:
        The events with exactly :data:`EVENT_COLUMNS`, string ids, int64 ``ts``, sorted by
        (ts, original order). A datetime ``ts`` column (e.g. from Parquet) becomes epoch
        milliseconds; naive datetimes are read as UTC.

    Raises:
        DatasetError: A column is missing, an id is empty, a type is unknown, or a ``ts``
            is not an integer.
    """
    _require_columns(frame, EVENT_COLUMNS, source)
    if frame.empty:
        msg = f"{source}: no events (only a header?)"
        raise DatasetError(msg)
    out = pd.DataFrame({c: _id_column(frame, c, source) for c in EVENT_COLUMNS[:3]})
    types = frame["type"].astype(str)
    bad_types = ~types.isin(EVENT_TYPES)
    if bad_types.any():
        row = int(np.flatnonzero(bad_types.to_numpy())[0])
        msg = (
            f"{source}: column 'type' must be one of {', '.join(EVENT_TYPES)}, "
            f"row {row} has {types.iloc[row]!r}"
        )
        raise DatasetError(msg)
    out["type"] = types
    raw_ts = frame["ts"]
    if pd.api.types.is_datetime64_any_dtype(raw_ts):
        if getattr(raw_ts.dt, "tz", None) is None:
            raw_ts = raw_ts.dt.tz_localize("UTC")
        raw_ts = (raw_ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    elif raw_ts.dtype == object:
        raw_ts = _iso_to_millis(raw_ts)
    ts_num = pd.to_numeric(raw_ts, errors="coerce")
    bad_ts = ts_num.isna() | (ts_num != np.floor(ts_num))
    if bad_ts.any():
        row = int(np.flatnonzero(bad_ts.to_numpy())[0])
        msg = (
            f"{source}: column 'ts' must be integer epoch milliseconds or an ISO-8601 "
            f"time, row {row} has {frame['ts'].iloc[row]!r}"
        )
        raise DatasetError(msg)
    out["ts"] = ts_num.astype(np.int64)
    if out["event_id"].duplicated().any():
        dup = out["event_id"][out["event_id"].duplicated()].iloc[0]
        msg = f"{source}: column 'event_id' must be unique, {dup!r} repeats"
        raise DatasetError(msg)
    return _sort_events(out)


def _iso_to_millis(values: pd.Series) -> pd.Series:
    """Epoch milliseconds of a text column whose non-numbers are all ISO-8601 times
    (``2026-09-06T05:27:51.081Z``; no offset: UTC); the column as it was otherwise."""
    text = values.astype(str).str.strip()
    if pd.to_numeric(text, errors="coerce").notna().all():
        return values  # numbers written as text
    try:
        times = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        return values  # the caller names the first row that is neither
    millis: pd.Series = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return millis


_MS_FROM = 100_000_000_000  # 1973-03-03 in epoch ms; 5138 AD in epoch seconds
_MIN_VALIDATION_USERS = 50


def training_data_warnings(events: pd.DataFrame, catalog: pd.DataFrame | None) -> list[str]:
    """What in validated training data will not serve as the user expects.

    * Items of the events that the catalog lacks: the worker dead-letters events for
      items outside its catalog, and they get no title to be cited by.
    * Fewer than 50 users with two or more events: too few to validate on.
    * ``ts`` that look like epoch seconds (every one before 1973 read as milliseconds):
      the worker reads milliseconds, so recency, trends and the model's date are off.

    Raises:
        DatasetError: no item of the events is in the catalog (ids of another system,
            or a different spelling such as ``42`` against ``SKU-42``).

    Example:
        >>> events = pd.DataFrame(
        ...     {"user_id": ["u", "u", "v"], "item_id": ["a", "b", "b"], "ts": [1_700_000_000] * 3}
        ... )
        >>> for line in training_data_warnings(events, pd.DataFrame({"item_id": ["a"]})):
        ...     print(line.split(": ")[0])
        1 of 2 items of the events (2 of 3 events, 66.7%) are not in the catalog, e.g. 'b'
        only 1 user(s) have two or more events
        'ts' looks like epoch seconds (the latest, 1700000000, is 1970-01-20 as milliseconds)
    """
    out: list[str] = []
    if catalog is not None:
        known = set(catalog["item_id"].astype(str))
        items = events["item_id"].astype(str)
        outside = ~items.isin(known)
        if outside.all():
            msg = (
                f"no item of the events is in the catalog: the events name items like "
                f"{items.iloc[0]!r}, the catalog {next(iter(sorted(known)), '')!r}; "
                "both must use the same item ids"
            )
            raise DatasetError(msg)
        if outside.any():
            missing = items[outside]
            unique = missing.unique()
            out.append(
                f"{len(unique):,} of {items.nunique():,} items of the events "
                f"({len(missing):,} of {len(items):,} events, {outside.mean():.1%}) are not "
                f"in the catalog, e.g. {', '.join(repr(i) for i in unique[:3])}: the worker "
                "dead-letters events for items outside its catalog"
            )
    repeat_users = int((events["user_id"].value_counts() >= 2).sum())
    if repeat_users < _MIN_VALIDATION_USERS:
        out.append(
            f"only {repeat_users:,} user(s) have two or more events: training holds out "
            "each one's last event to choose its settings and to report validation "
            f"numbers, and with fewer than {_MIN_VALIDATION_USERS} such users both are noise"
        )
    latest = int(events["ts"].max())
    if 0 < latest < _MS_FROM:
        day = pd.Timestamp(latest, unit="ms").strftime("%Y-%m-%d")
        out.append(
            f"'ts' looks like epoch seconds (the latest, {latest}, is {day} as "
            "milliseconds): events must carry epoch milliseconds"
        )
    return out


def load_event_log(path: Path) -> pd.DataFrame:
    """Events from a CSV or Parquet file in the engine's event schema.

    Args:
        path: A ``.csv``, ``.parquet`` or ``.pq`` file with columns :data:`EVENT_COLUMNS`.

    Returns:
        The validated events, sorted by (ts, file order).

    Raises:
        DatasetError: The file is missing, of another kind, or not in the schema.
    """
    return validate_events(_read_table(Path(path)), Path(path))


def _parse_tags(value: Any, source: Path | str, row: int) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"{source}: column 'tags' row {row} is not a JSON list: {text!r}"
            raise DatasetError(msg) from exc
        if not isinstance(parsed, list):
            msg = f"{source}: column 'tags' row {row} must be a list, got {text!r}"
            raise DatasetError(msg)
        return [str(v) for v in parsed]
    return [t.strip() for t in text.split("|") if t.strip()]


def _parse_bool(value: Any, source: Path | str, row: int) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "t", "y"):
        return True
    if text in ("false", "0", "no", "f", "n"):
        return False
    msg = f"{source}: column 'available' must be a boolean, row {row} has {value!r}"
    raise DatasetError(msg)


def validate_catalog(frame: pd.DataFrame, source: Path | str = "catalog") -> pd.DataFrame:
    """Check and normalise a catalog table.

    ``item_id`` and ``title`` are required. Missing optional columns get defaults:
    ``category`` "", ``tags`` [], ``price`` NaN, ``description`` "", ``available`` True.
    ``tags`` may be lists, JSON list strings (``'["a", "b"]'``) or ``|``-separated strings.

    Args:
        frame: The raw table.
        source: Named in error messages.

    Returns:
        The catalog with exactly :data:`CATALOG_COLUMNS`.

    Raises:
        DatasetError: A required column is missing, an id repeats or is empty, a price is not
            a number or ``available`` is not a boolean.
    """
    _require_columns(frame, ("item_id", "title"), source)
    n = len(frame)
    ids = _id_column(frame, "item_id", source)
    _id_column(frame, "title", source)  # a blank title would be dead-lettered when served
    if ids.duplicated().any():
        msg = (
            f"{source}: column 'item_id' must be unique, {ids[ids.duplicated()].iloc[0]!r} repeats"
        )
        raise DatasetError(msg)

    def text(column: str) -> list[str]:
        if column not in frame.columns:
            return [""] * n
        return [
            "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in frame[column]
        ]

    if "price" in frame.columns:
        raw = frame["price"].astype(object).where(frame["price"].astype(str) != "", None)
        price = pd.to_numeric(raw, errors="coerce")
        bad = price.isna() & raw.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            msg = f"{source}: column 'price' must be a number, row {row} has {raw.iloc[row]!r}"
            raise DatasetError(msg)
        prices = price.astype(float).to_numpy()
    else:
        prices = np.full(n, np.nan)
    tags = (
        [_parse_tags(v, source, i) for i, v in enumerate(frame["tags"])]
        if "tags" in frame.columns
        else [[] for _ in range(n)]
    )
    available = (
        [_parse_bool(v, source, i) for i, v in enumerate(frame["available"])]
        if "available" in frame.columns
        else [True] * n
    )
    return pd.DataFrame(
        {
            "item_id": ids.to_numpy(),
            "title": text("title"),
            "category": text("category"),
            "tags": tags,
            "price": prices,
            "description": text("description"),
            "available": np.asarray(available, dtype=bool),
        }
    )


def load_catalog(path: Path) -> pd.DataFrame:
    """A catalog from a CSV or Parquet file; see :func:`validate_catalog`.

    Args:
        path: A ``.csv``, ``.parquet`` or ``.pq`` file.

    Returns:
        The validated catalog.

    Raises:
        DatasetError: The file is missing, of another kind, or not in the schema.
    """
    return validate_catalog(_read_table(Path(path)), Path(path))


def load_session_log(path: Path) -> pd.DataFrame:
    """Events from a ``session_id;user_id;item_id;timeframe;eventdate`` session log.

    This is the semicolon-separated format of e.g. the DIGINETICA/CIKM Cup 2016 item views.
    Every row becomes a ``view``; ``ts`` is the UTC midnight of ``eventdate`` (YYYY-MM-DD) in
    epoch milliseconds plus ``timeframe`` (milliseconds into the session); ``event_id`` is
    ``"<file stem>-<row>"``. Rows without a user (empty or ``NA``) get the user
    ``"session-<session_id>"``, so each anonymous session is its own user.

    Args:
        path: The log file, with a header row.

    Returns:
        The validated events, sorted by (ts, file order).

    Raises:
        DatasetError: The file is missing or a column is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path} does not exist"
        raise DatasetError(msg)
    raw = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    _require_columns(raw, _SESSION_COLUMNS, path)
    dates = pd.to_datetime(raw["eventdate"], format="%Y-%m-%d", errors="coerce", utc=True)
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        got = raw["eventdate"].iloc[row]
        msg = f"{path}: column 'eventdate' must be YYYY-MM-DD, row {row} has {got!r}"
        raise DatasetError(msg)
    frames = pd.to_numeric(raw["timeframe"], errors="coerce")
    if frames.isna().any():
        row = int(np.flatnonzero(frames.isna().to_numpy())[0])
        got = raw["timeframe"].iloc[row]
        msg = f"{path}: column 'timeframe' must be milliseconds, row {row} has {got!r}"
        raise DatasetError(msg)
    day_ms = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    users = raw["user_id"].str.strip()
    anonymous = users.isin(["", "NA", "nan", "NaN", "None"])
    users = users.where(~anonymous, "session-" + raw["session_id"].astype(str))
    events = pd.DataFrame(
        {
            "event_id": [f"{path.stem}-{i}" for i in range(len(raw))],
            "user_id": users,
            "item_id": raw["item_id"],
            "type": "view",
            "ts": day_ms.astype(np.int64) + frames.astype(np.int64),
        }
    )
    return validate_events(events, path)
