"""GPU retrieval benchmark for the torch exact-search index (index/torch_index.py).

Synthetic unit-norm item and query vectors, d=128, k=100. For each catalog size and
stored dtype it reports queries/s for large query batches and recall@100 against an
exact float32 search on the same device. Run on a CUDA machine:

    python benchmarks/retrieval_gpu.py --sizes 100000,1000000,10000000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.index.torch_index import TorchExactIndex  # noqa: E402


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = 0
    for f, t in zip(found.tolist(), truth.tolist(), strict=True):
        hits += len(set(f) & set(t))
    return hits / truth.numel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--queries", type=int, default=65536)
    parser.add_argument("--chunks", default="1048576")
    parser.add_argument("--blocks", default="1,32")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        items = unit(torch.randn(n, args.dim, device=dev, generator=gen))
        queries = unit(torch.randn(args.queries, args.dim, device=dev, generator=gen))
        # Ground truth: exact float32 top-k for the first 2048 queries.
        exact = TorchExactIndex(args.dim, "cuda", "float32", item_chunk=262_144, block=1)
        exact._vectors = items
        exact._dead = torch.zeros(n, dtype=torch.bool, device=dev)
        _, truth = exact.search_tensors(queries[:2048], args.k)
        for dtype in args.dtypes.split(","):
            for chunk, block in (
                (int(c), int(b)) for c in args.chunks.split(",") for b in args.blocks.split(",")
            ):
                index = TorchExactIndex(args.dim, "cuda", dtype, item_chunk=chunk, block=block)
                index._vectors = items.to(index.dtype)
                index._dead = torch.zeros(n, dtype=torch.bool, device=dev)
                _, rows = index.search_tensors(queries[:2048], args.k)
                recall = recall_at_k(rows, truth)
                index.search_tensors(queries[: args.batch], args.k)  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for start in range(0, args.queries, args.batch):
                    index.search_tensors(queries[start : start + args.batch], args.k)
                torch.cuda.synchronize()
                qps = args.queries / (time.perf_counter() - t0)
                row = {
                    "items": n,
                    "dim": args.dim,
                    "k": args.k,
                    "dtype": dtype,
                    "item_chunk": chunk,
                    "block": block,
                    "batch": args.batch,
                    "qps": round(qps),
                    "recall_at_k": round(recall, 4),
                    "gpu": name,
                }
                print(json.dumps(row), flush=True)
                results.append(row)
                del index
        del items, queries, exact
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
