"""Progress bars for long work (training, index builds) from the engine's callbacks.

The engine reports ``progress(stage, done, total)``. Each stage gets a bar of its own;
when a later stage starts, the bars before it are finished (an early-stopped encoder ends
at its last epoch: "25/25", not "25/200"). Given the stages in the order they run, a first
bar follows the whole job through them, so it advances from the first stage to the last
rather than filling up once per stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["overall_position", "progress_callback"]


def overall_position(stages: Sequence[str], stage: str, done: int, total: int) -> float:
    """How far the whole job is, in stages: ``i + done / total`` in the i-th stage (0-based).

    A stage that is not listed leaves the position unknown (-1.0).

    Example:
        >>> overall_position(["validate", "fit"], "fit", 1, 2)
        1.5
    """
    if stage not in stages:
        return -1.0
    fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    return stages.index(stage) + fraction


@contextmanager
def progress_callback(
    console: Console, stages: Sequence[str] = (), title: str = "overall"
) -> Iterator[Callable[[str, int, int], None]]:
    """Yields ``progress(stage, done, total)`` that draws one bar per stage name.

    With ``stages`` (the stage names in the order they run) a first bar follows the whole
    job through them, a listed stage's start finishes the bars of the listed stages before
    it, and a normal exit finishes them all.
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        n = len(stages)
        overall = bar.add_task(title, total=n, count=f"0/{n} stages") if stages else None
        tasks: dict[str, TaskID] = {}

        def finish(stage: str) -> None:
            """Draw a stage's bar full at the count it reached ("25/25" for an
            early-stopped 200-epoch cap)."""
            task = bar.tasks[tasks[stage]]
            reached = int(task.completed) or int(task.total or 1)
            bar.update(task.id, completed=reached, total=reached, count=f"{reached}/{reached}")

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                if stage in stages:
                    for earlier in stages[: stages.index(stage)]:
                        if earlier in tasks:
                            finish(earlier)
                tasks[stage] = bar.add_task(stage, total=total, count="")
            bar.update(tasks[stage], completed=done, total=total, count=f"{done}/{total}")
            position = overall_position(stages, stage, done, total)
            if overall is not None and position >= 0:
                bar.update(
                    overall,
                    completed=position,
                    description=f"{title}: {stage}",
                    count=f"{stages.index(stage) + 1}/{n} stages",
                )

        yield update
        for stage in stages:
            if stage in tasks:
                finish(stage)
        if overall is not None:
            bar.update(overall, completed=n, description=title, count=f"{n}/{n} stages")
