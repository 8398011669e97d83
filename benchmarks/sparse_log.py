"""Write the synthetic sparse session log of tests/sparse_shop.py as CSV files.

The shape of a real e-commerce view log: thousands of items viewed a handful of times, a
new user per session, no titles (the catalog's titles are the item ids). Feed it to
``streamrec evaluate`` to compare the worker's lists with baselines on sparse data::

    python benchmarks/sparse_log.py --out data/sparse
    streamrec evaluate --events data/sparse/events.csv --catalog data/sparse/catalog.csv \\
        --protocol time --models ours,popular,item-knn,ease,als --sequence-epochs 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sparse_shop import sparse_sessions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sparse"), help="output folder")
    parser.add_argument("--themes", type=int, default=120, help="hidden themes sessions browse")
    parser.add_argument("--per-theme", type=int, default=60, help="items per theme")
    parser.add_argument("--sessions", type=int, default=3000, help="sessions (users)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    log = sparse_sessions(
        themes=args.themes, per_theme=args.per_theme, sessions=args.sessions, seed=args.seed
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log.events.to_csv(args.out / "events.csv", index=False)
    catalog = log.catalog.assign(tags=log.catalog["tags"].map(json.dumps))
    catalog.to_csv(args.out / "catalog.csv", index=False)
    print(  # noqa: T201
        f"{len(log.events):,} events, {log.events['item_id'].nunique():,} items viewed, "
        f"{len(catalog):,} in the catalog, {log.events['user_id'].nunique():,} sessions "
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
