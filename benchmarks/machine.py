"""The one-line description of the machine a benchmark ran on, for every report."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, core count, OS and Python version, e.g. "AMD EPYC, 2 cores, Linux ..."."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def missing_model(model_dir: Path) -> str | None:
    """Why ``model_dir`` cannot be benchmarked (no trained model with an index), with the
    commands that make one; None when it can."""
    if (model_dir / "index" / "items.ids.json").is_file():
        return None
    return (
        f"no model with an index in {model_dir}: streamrec train --dataset ml-100k "
        f"--out {model_dir} && streamrec index build --model-dir {model_dir}"
    )
