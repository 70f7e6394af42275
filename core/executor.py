"""Parallel map over images: the one executor interface every per-image stage uses.

The local backend runs worker processes from a ``forkserver`` context (safe next to the
open MongoDB client FiftyOne keeps in the parent; ``fork`` is not). Work travels in
chunks of paths and only the small per-image results come back, so the parent's memory
does not grow with image size. Other backends (Ray) implement the same
:class:`Executor` protocol.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Protocol, Sequence


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None = None) -> Iterator[Any]:
        """Apply ``fn`` to every item; results come back in input order."""


def default_workers() -> int:
    """``os.sched_getaffinity`` size (the CPUs this process may use), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class LocalExecutor:
    """Worker processes on this machine; ``workers=0`` or ``1`` runs in-process.

    Args:
        workers: number of processes; ``None`` = :func:`default_workers`.
        preload: modules the forkserver imports once before it forks workers (see
            ``multiprocessing.set_forkserver_preload``), so each worker starts with them
            loaded instead of importing them itself. Takes effect only if the forkserver
            of this process has not started yet; a module that fails to import is skipped.
    """

    def __init__(self, workers: int | None = None, preload: Sequence[str] = ()):
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.preload = tuple(preload)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None = None) -> Iterator[Any]:
        if self.workers <= 1 or len(items) < 2:
            for item in items:
                yield fn(item)
            return
        if chunksize is None:
            chunksize = max(1, min(256, len(items) // (self.workers * 8) or 1))
        ctx = mp.get_context("forkserver")
        if self.preload:
            ctx.set_forkserver_preload(["__main__", *self.preload])
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        finished = False
        try:
            yield from pool.map(fn, items, chunksize=chunksize)
            finished = True
        finally:
            # on Ctrl-C, an error or an abandoned generator, drop the chunks not started yet
            # instead of waiting for all of them (``with`` would wait)
            pool.shutdown(wait=finished, cancel_futures=not finished)


def get_executor(name: str = "local", workers: int | None = None, **kwargs: Any) -> Executor:
    """Executor by name (``local``; others come from later backends).

    ``kwargs`` are backend options; ``local`` reads ``preload`` (see :class:`LocalExecutor`)
    and ignores the rest.

    Raises:
        ValueError: unknown executor name.
    """
    if name == "local":
        return LocalExecutor(workers, preload=kwargs.get("preload", ()))
    raise ValueError(f"Unknown executor {name!r}; available: local.")
