"""Progress bars (rich) for long work: files done / total, rate, time left.

Set ``VETSET_PROGRESS=0`` to silence them (tests and CI logs do).

Other front ends (the FiftyOne App plugin) follow the same loops through
:func:`listen`: a listener is called with ``(description, done, total)`` as items finish,
whether or not the terminal bar is shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

#: Callables ``(description, done, total)`` told about progress (see :func:`listen`).
_listeners: list[Callable[[str, int, int | None], None]] = []


@contextmanager
def listen(callback: Callable[[str, int, int | None], None], min_interval_s: float = 0.5) -> Iterator[None]:
    """Call ``callback(description, done, total)`` while :func:`track` loops run in this block.

    Calls are throttled to one per ``min_interval_s`` seconds per loop, plus one when each
    loop starts (``done`` 0) and one when it ends. ``total`` is ``None`` when unknown.
    """
    last = {"t": 0.0}

    def throttled(description: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done == 0 or (total is not None and done >= total) or now - last["t"] >= min_interval_s:
            last["t"] = now
            callback(description, done, total)

    _listeners.append(throttled)
    try:
        yield
    finally:
        _listeners.remove(throttled)


def _notify(iterable: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    listeners = list(_listeners)
    for cb in listeners:
        cb(description, 0, total)
    done = 0
    for item in iterable:
        done += 1  # counted when it arrives: a consumer that stops at the last item never resumes us
        for cb in listeners:
            cb(description, done, total)
        yield item


def enabled() -> bool:
    return os.environ.get("VETSET_PROGRESS", "1") not in ("0", "false", "no")


def track(iterable: Iterable[T], total: int | None = None, description: str = "working", unit: str = "img") -> Iterator[T]:
    """Yield from ``iterable`` while showing ``done/total`` and the rate in ``unit``/s."""
    if _listeners:
        iterable = _notify(iterable, total, description)
    if not enabled():
        yield from iterable
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # noqa: D102
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  Rate(), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            bar.advance(task)  # before the yield, as in _notify
            yield item
