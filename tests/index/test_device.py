"""Device choice: CPU unless faiss can really use a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.index.device import DeviceUnavailableError, choose_device, faiss_gpu_count
from streamrec.index.faiss_index import FaissItemIndex

needs_gpu = pytest.mark.skipif(faiss_gpu_count() == 0, reason="faiss sees no GPU here")


def test_cpu_is_chosen_when_asked():
    assert choose_device("cpu").kind == "cpu"


@pytest.mark.skipif(faiss_gpu_count() > 0, reason="this machine has a GPU")
def test_auto_falls_back_to_cpu_without_a_gpu():
    assert choose_device("auto").kind == "cpu"


@pytest.mark.skipif(faiss_gpu_count() > 0, reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_names_the_setting():
    with pytest.raises(DeviceUnavailableError, match="STREAMREC_DEVICE"):
        choose_device("gpu")


@pytest.mark.gpu
@needs_gpu
def test_gpu_index_returns_the_same_results_as_cpu():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    ids = [str(i) for i in range(2000)]
    cpu, gpu = FaissItemIndex(32), FaissItemIndex(32, device=choose_device("gpu"))
    cpu.upsert(ids, vectors)
    gpu.upsert(ids, vectors)
    for a, b in zip(cpu.search(vectors[:50], 10), gpu.search(vectors[:50], 10), strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-3)
