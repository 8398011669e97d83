"""The one place that decides whether FAISS runs on a GPU or on the CPU.

``auto`` uses a GPU when the installed faiss was built with GPU support (the ``faiss-gpu``
extra) and sees at least one device; otherwise the CPU, which is the default, tested path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import torch

DeviceChoice = Literal["auto", "cpu", "gpu"]


class DeviceUnavailableError(RuntimeError):
    """A GPU was asked for explicitly but faiss cannot use one here."""


@dataclass(frozen=True)
class Device:
    """Where FAISS indexes live: ``kind`` is "cpu" or "gpu", ``gpu_id`` the CUDA device."""

    kind: Literal["cpu", "gpu"]
    gpu_id: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


def faiss_gpu_count() -> int:
    """Number of GPUs this faiss build can use (0 for a CPU-only build)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    if get_num_gpus is None:
        return 0
    try:
        return int(get_num_gpus())
    except RuntimeError:
        return 0


def choose_device(choice: DeviceChoice = "auto") -> Device:
    """Resolve a configured device choice to the device FAISS will use.

    Raises:
        DeviceUnavailableError: ``choice`` is "gpu" and no GPU is usable by faiss.
    """
    gpus = faiss_gpu_count()
    if choice == "gpu" and gpus == 0:
        msg = (
            "STREAMREC_DEVICE=gpu but faiss sees no GPU: install the 'gpu' extra "
            "(faiss-gpu) on a machine with CUDA, or set STREAMREC_DEVICE=cpu"
        )
        raise DeviceUnavailableError(msg)
    if choice == "cpu" or gpus == 0:
        return Device("cpu")
    return Device("gpu", 0)


def set_cpu_threads(threads: int) -> None:
    """Threads FAISS (OpenMP) and torch (the sequential encoder) may use on the CPU.

    One per worker process avoids idle threads spinning on small batches; scale out with
    more worker processes."""
    if threads < 1:
        msg = f"CPU thread count must be >= 1, got {threads}"
        raise ValueError(msg)
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
