"""Progress bars (rich) for long work: files done / total, rate, time left.

Set ``VETSET_PROGRESS=0`` to silence them (tests and CI logs do).
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("VETSET_PROGRESS", "1") not in ("0", "false", "no")


def track(iterable: Iterable[T], total: int | None = None, description: str = "working", unit: str = "img") -> Iterator[T]:
    """Yield from ``iterable`` while showing ``done/total`` and the rate in ``unit``/s."""
    if not enabled():
        yield from iterable
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeRemainingColumn)
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # noqa: D102
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  Rate(), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
