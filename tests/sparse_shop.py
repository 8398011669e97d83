"""A sparse, anonymous session log: the shape of a real e-commerce view log.

Many items, most viewed a handful of times; every session is a new user; no titles,
categories or descriptions (a catalog whose title is the item id). Sessions browse one of
several hidden themes, so a model that learned anything recommends a session items of its
theme. On such data many learned item vectors are nearly identical, which is what made
the worker's near-duplicate filter eat its lists and the popular fill take their place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

T0 = 1_750_000_000_000


@dataclass(frozen=True)
class SparseLog:
    """Training events, the held-out sessions' histories and targets, the catalog, and
    every session's events (held-out ones included) for a time-split evaluation."""

    train: pd.DataFrame
    test_histories: list[list[str]]
    test_targets: list[str]
    catalog: pd.DataFrame
    events: pd.DataFrame


def sparse_sessions(
    themes: int = 40,
    per_theme: int = 60,
    sessions: int = 3000,
    test_sessions: int = 300,
    seed: int = 0,
) -> SparseLog:
    """``sessions`` view sessions of 2-7 events over ``themes * per_theme`` items; the last
    ``test_sessions`` (in time) are held out: all but their last view are the history,
    the last view the target. Items within a theme have a long-tailed popularity."""
    rng = np.random.default_rng(seed)
    n_items = themes * per_theme
    rows: list[tuple[str, str, str, str, int]] = []
    every: list[tuple[str, str, str, str, int]] = []
    histories: list[list[str]] = []
    targets: list[str] = []
    ts = T0
    for s in range(sessions):
        theme = int(rng.integers(themes))
        length = int(rng.integers(2, 8))
        views = []
        for _ in range(length):
            if rng.random() < 0.1:  # a stray click anywhere
                item = int(rng.integers(n_items))
            else:
                item = theme * per_theme + min(int(rng.pareto(1.2) * 3), per_theme - 1)
            views.append(f"p{item}")
        for view in views:
            ts += int(rng.integers(1_000, 60_000))
            every.append((f"e{len(every)}", f"session-{s}", view, "view", ts))
        if s >= sessions - test_sessions:
            if len(set(views)) < 2:
                continue
            histories.append(views[:-1])
            targets.append(views[-1])
            continue
        rows += every[-length:]
    columns = ["event_id", "user_id", "item_id", "type", "ts"]
    train = pd.DataFrame(rows, columns=columns)
    ids = [f"p{i}" for i in range(n_items)]
    catalog = pd.DataFrame(
        {
            "item_id": ids,
            "title": ids,
            "category": [""] * n_items,
            "tags": [[] for _ in ids],
            "price": [np.nan] * n_items,
            "description": [""] * n_items,
            "available": [True] * n_items,
        }
    )
    return SparseLog(train, histories, targets, catalog, pd.DataFrame(every, columns=columns))
