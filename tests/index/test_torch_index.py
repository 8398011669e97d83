"""The torch exact-search index: same answers as plain exact search, on CPU and GPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional 'lm'/GPU path)")

from streamrec.index.exact import ExactIndex  # noqa: E402
from streamrec.index.torch_index import TorchExactIndex, _block_topk  # noqa: E402

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
        ],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [1, 8, 32])
def test_block_top_k_is_exact(device, block):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 4096, generator=gen).to(device)
    values, rows = _block_topk(torch, scores, 50, block)
    plain = torch.topk(scores, 50, dim=1)
    assert torch.equal(values, plain.values)
    assert torch.equal(torch.gather(scores, 1, rows), plain.values)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [1, 8, 32])  # 32 leaves a partial last block (padding)
def test_matches_the_exact_numpy_twin_with_removals_and_updates(device, block):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    ids = [f"i{n}" for n in range(3000)]
    ref, idx = ExactIndex(16), TorchExactIndex(16, device, "float32", item_chunk=1024, block=block)
    for index in (ref, idx):
        index.upsert(ids, vectors)
        index.remove(ids[:500])
        index.upsert(["i7"], vectors[2999:3000])
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    for a, b in zip(ref.search(queries, 25), idx.search(queries, 25), strict=True):
        assert a.item_ids == b.item_ids
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)
    assert len(idx) == 2501
