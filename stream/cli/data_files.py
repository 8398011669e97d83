"""The event log and catalog files a command was given, checked as training data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def load_data_files(
    command: str, events: str | None, catalog: str | None, *, sessions: str | None = None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The ``--events`` (or ``--sessions``) and ``--catalog`` files (None where not given).

    A data error stops the command with its message (``streamrec COMMAND: ...``, no
    traceback); what the data will not serve as expected
    (:func:`streamrec.engine.offline.datasets.training_data_warnings`) is written to stderr as
    warnings.
    """
    from streamrec.engine.offline import datasets

    try:
        log: pd.DataFrame | None = None
        if sessions:
            log = datasets.load_session_log(Path(sessions))
        elif events:
            log = datasets.load_event_log(Path(events))
        items = datasets.load_catalog(Path(catalog)) if catalog else None
        warnings = datasets.training_data_warnings(log, items) if log is not None else []
    except datasets.DatasetError as exc:
        msg = f"streamrec {command}: {exc}"
        raise SystemExit(msg) from None
    for warning in warnings:
        sys.stderr.write(f"streamrec {command}: warning: {warning}\n")
    return log, items
