"""The one-line description of the machine a benchmark ran on, for every report."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


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


def write_report(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> Path:
    """Write ``<out_dir>/<name>.json`` and ``.md`` (creating the folder), print the
    Markdown, and return the path without suffix (for extra files such as a plot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / name
    base.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    base.with_suffix(".md").write_text(markdown)
    print(markdown)
    return base
