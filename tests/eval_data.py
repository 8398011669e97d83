"""Small interleaved event logs with known structure, for the evaluation tests.

Four 10-item departments; each user shops (95%) in one of them, and users' events
interleave in time, so both leave-last-out and time splits evaluate every user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEPARTMENTS = ("run", "camp", "cook", "read")


def shop_events(users: int = 80, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Each user shops (95%) in one of four 10-item departments; users' events interleave."""
    rng = np.random.default_rng(seed)
    kinds = ["view", "view", "click", "add_to_cart", "purchase"]
    rows = []
    for j in range(per_user):
        for u in range(users):
            home = DEPARTMENTS[u % 4]
            dept = home if rng.random() < 0.95 else DEPARTMENTS[rng.integers(4)]
            rows.append(
                {
                    "event_id": f"e-{u}-{j}",
                    "user_id": f"user-{u}",
                    "item_id": f"{dept}-{min(int(rng.exponential(4)), 9)}",
                    "type": kinds[rng.integers(len(kinds))],
                    "ts": 1_700_000_000_000 + (j * users + u) * 60_000,
                }
            )
    return pd.DataFrame(rows)


def shop_catalog(extra: int = 5) -> pd.DataFrame:
    ids = [f"{d}-{k}" for d in DEPARTMENTS for k in range(10)] + [f"new-{k}" for k in range(extra)]
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"{i} title" for i in ids],
            "category": [i.split("-")[0] for i in ids],
        }
    )


def events_from(rows: Sequence[tuple[str, str, int]], kind: str = "view") -> pd.DataFrame:
    """Events from (user, item, ts) triples, in file order."""
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [kind] * len(rows),
            "ts": np.asarray([r[2] for r in rows], dtype=np.int64),
        }
    )
