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


def rate_text(per_s: float | None, unit: str) -> str:
    """A rate as a progress bar shows it: ``"1,234 img/s"``, ``"3.4 batch/s"``, and below one
    item a second ``"2.5 s/batch"`` (never ``"0 batch/s"``); ``"- img/s"`` when unknown or zero."""
    if not per_s or per_s <= 0:
        return f"- {unit}/s"
    if per_s >= 10:
        return f"{per_s:,.0f} {unit}/s"
    if per_s >= 1:
        return f"{per_s:.1f} {unit}/s"
    return f"{1 / per_s:,.1f} s/{unit}"


def track(iterable: Iterable[T], total: int | None = None, description: str = "working", unit: str = "img") -> Iterator[T]:
    """Yield from ``iterable`` while showing ``done/total`` and the rate in ``unit``/s (no bar
    when ``total`` is 0: an audit that reused every image would show ``0/0``)."""
    if _listeners:
        iterable = _notify(iterable, total, description)
    if not enabled() or total == 0:
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
            # a finished bar shows the whole loop's average; rich's own speed is over the last
            # 30 s and is None with a single item
            speed = task.completed / task.elapsed if task.finished and task.elapsed else task.speed
            return Text(rate_text(speed, unit), style="progress.data.speed")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  Rate(), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            bar.advance(task)  # before the yield, as in _notify
            yield item
