"""Parallel map over images: the one executor interface every per-image stage uses.

The local backend runs worker processes from a ``forkserver`` context (safe next to the
open MongoDB client FiftyOne keeps in the parent; ``fork`` is not). Work travels in
chunks of paths and only the small per-image results come back, so the parent's memory
does not grow with image size. The Ray backend (:mod:`vetset.core.executor_ray`, the
``ray`` extra) implements the same :class:`Executor` protocol with Ray tasks.

Stages do not pick a backend themselves: they call :func:`executor_for`, which takes the
choice of the enclosing :func:`use_executor` block (the run sets it from the recipe's
``executor:`` block or ``--executor``), else the local backend. This is joblib's
``parallel_config`` pattern: the caller chooses the engine, the library code stays the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from vetset.core.errors import RecipeError

#: Executor backends by name, in the order messages list them.
BACKENDS = ("local", "ray")


class Executor(Protocol):
    """What every backend offers: its ``name``, ``workers`` (items processed at once), an ordered ``map``."""

    name: str
    workers: int

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

    name = "local"

    def __init__(self, workers: int | None = None, preload: Sequence[str] = ()):
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.preload = tuple(preload)

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("forkserver")
        if self.preload and not _PRESTARTED:
            ctx.set_forkserver_preload(["__main__", *self.preload])
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None = None) -> Iterator[Any]:
        """Apply ``fn`` to every item in the worker processes; results come back in input order.

        Items travel in chunks of ``chunksize`` (default: about 8 chunks per worker, at most
        256 items). While the workers start (the forkserver's preload imports, 0.4-1 s; this
        process would only wait), this process takes chunks from the end of the list and
        applies ``fn`` to them itself, one chunk at a time, until the pool accepts work. So
        ``fn`` must also run in the calling process, as it does with ``workers`` <= 1. A
        worker's exception is raised when its chunk's turn comes, as with
        ``ProcessPoolExecutor.map``; so is one raised here.
        """
        _CALLERS.add(os.getpid())
        if self.workers <= 1 or len(items) < 2:
            for item in items:
                yield fn(item)
            return
        if chunksize is None:
            chunksize = max(1, min(256, len(items) // (self.workers * 8) or 1))
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        pool = self._new_pool()
        feed = _Feed(pool, fn, chunks)
        finished = False
        try:
            local = feed.help_while_starting()
            for i, future in enumerate(feed.futures):
                ok, result = local.pop(i) if i in local else (True, future.result())
                if not ok:
                    raise result
                yield from result
            finished = True
        finally:
            # on Ctrl-C, an error or an abandoned generator, drop the chunks not started yet
            # instead of waiting for all of them
            feed.stop()
            if not finished:
                feed.cancel()
            pool.shutdown(wait=finished, cancel_futures=not finished)


_SET_UP: set[tuple[str, str]] = set()
#: Processes that called :meth:`LocalExecutor.map`: work functions also run there (in-process
#: with ``workers`` <= 1, and while the workers start), and must leave its settings alone.
_CALLERS: set[int] = set()


def setup_worker_once(setup: Callable[[], None]) -> None:
    """Call ``setup`` once per process, and only in a worker process (a local pool's or a
    Ray worker), never in a process that called :meth:`LocalExecutor.map`, which keeps its
    own settings (OpenCV's thread count, for one).
    """
    key = (setup.__module__, setup.__qualname__)
    if key not in _SET_UP and os.getpid() not in _CALLERS:
        _SET_UP.add(key)
        setup()


def _run_chunk(fn: Callable[[Any], Any], chunk: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in chunk]


class _Feed:
    """Hands ``chunks`` to ``pool`` from a thread, front first, while the calling thread
    takes chunks from the back until the pool's first ``submit`` returns.

    That first ``submit`` blocks until the worker processes exist: with a ``forkserver``
    context, until the forkserver has imported its preload modules. Later submits return
    at once, so the back-taking stops as soon as workers can take chunks.
    """

    def __init__(self, pool: ProcessPoolExecutor, fn: Callable[[Any], Any], chunks: list[Sequence[Any]]):
        self.pool, self.fn, self.chunks = pool, fn, chunks
        self.futures: list[Any] = [None] * len(chunks)
        self._lock = threading.Lock()
        self._next, self._end = 0, len(chunks)  # chunks [next, end) are not taken yet
        self._accepting = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._submit_all, name="vetset-workers-feed", daemon=True)
        self._thread.start()

    def _take_front(self) -> int | None:
        with self._lock:
            if self._next >= self._end:
                return None
            self._next += 1
            return self._next - 1

    def _submit_all(self) -> None:
        try:
            while (i := self._take_front()) is not None:
                self.futures[i] = self.pool.submit(_run_chunk, self.fn, self.chunks[i])
                self._accepting.set()
        except BaseException as exc:  # a broken pool: raised by the consumer
            self._error = exc
        finally:
            self._accepting.set()

    def help_while_starting(self) -> dict[int, tuple[bool, Any]]:
        """Run chunks from the back here until the pool accepts work; then wait for the
        feeding thread. Returns ``{chunk index: (True, results) or (False, exception)}``."""
        local: dict[int, tuple[bool, Any]] = {}
        while not self._accepting.is_set():
            with self._lock:
                if self._next >= self._end:
                    break
                self._end -= 1
                i = self._end
            try:
                local[i] = (True, _run_chunk(self.fn, self.chunks[i]))
            except Exception as exc:  # raised in order, as a worker's would be
                local[i] = (False, exc)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return local

    def stop(self) -> None:
        """Submit nothing more (the consumer stopped early)."""
        with self._lock:
            self._end = self._next

    def cancel(self) -> None:
        """Cancel the submitted chunks no worker has started, here and now (after :meth:`stop`).

        ``shutdown(cancel_futures=True)`` alone is not enough: the pool's manager thread
        cancels them only if the pool object still exists when it wakes up, and the pool is
        dropped with the generator, so about half the time every remaining chunk still ran
        (an interrupted 3,000-item map kept its workers busy, and the interpreter's exit
        waiting, for 7 s). ``ProcessPoolExecutor.map`` cancels its futures itself too.
        """
        self._thread.join()  # after stop(): at most the submit in progress
        for future in self.futures:
            if future is not None:
                future.cancel()


def get_executor(name: str = "local", workers: int | None = None, **kwargs: Any) -> Executor:
    """Executor by name: ``local`` (:class:`LocalExecutor`) or ``ray`` (:class:`~vetset.core.executor_ray.RayExecutor`).

    ``kwargs`` are backend options: ``preload`` (both; see each class) and ``address``
    (``ray`` only: ``None`` starts a local Ray instance, ``"auto"`` joins the running one,
    ``"ray://host:10001"`` a remote cluster); options a backend does not use are ignored.

    Raises:
        RecipeError: unknown executor name.
        VetsetError: ``ray`` without the ``ray`` package installed.
    """
    if name == "local":
        return LocalExecutor(workers, preload=kwargs.get("preload", ()))
    if name == "ray":
        from vetset.core.executor_ray import RayExecutor

        return RayExecutor(workers, address=kwargs.get("address"), preload=kwargs.get("preload", ()))
    raise RecipeError(f"Unknown executor {name!r}; the executor must be one of: {', '.join(BACKENDS)}.")


# -- the run's choice --------------------------------------------------------------------
_CHOICE: contextvars.ContextVar[Any] = contextvars.ContextVar("vetset_executor", default=None)


def _fields(spec: Any) -> tuple[str, str | None, int | None]:
    """``(name, address, workers)`` of a name, a mapping or an object with those attributes."""
    if isinstance(spec, str):
        return spec, None, None
    if isinstance(spec, Mapping):
        return spec.get("name") or "local", spec.get("address"), spec.get("workers")
    return getattr(spec, "name", None) or "local", getattr(spec, "address", None), getattr(spec, "workers", None)


@contextlib.contextmanager
def use_executor(spec: Any) -> Iterator[None]:
    """Make ``spec`` the executor of per-image work (:func:`executor_for`) inside the block.

    Args:
        spec: ``None`` (local), a backend name, or anything with ``name``/``address``/
            ``workers`` (:class:`~vetset.core.recipe.ExecutorOptions`, a mapping).

    On exit, a Ray instance that vetset started inside the block is shut down; a Ray
    instance it joined (one running before, or a cluster) is left running.
    """
    token = _CHOICE.set(spec)
    try:
        yield
    finally:
        _CHOICE.reset(token)
        release()


def current_executor() -> tuple[str, str | None, int | None]:
    """``(name, address, workers)`` of the enclosing :func:`use_executor` block; ``("local", None, None)`` outside one."""
    spec = _CHOICE.get()
    return ("local", None, None) if spec is None else _fields(spec)


def executor_for(spec: Any = None, workers: int | None = None, preload: Sequence[str] = ()) -> Executor:
    """The executor a stage uses for its per-image work.

    Args:
        spec: ``None`` = the enclosing :func:`use_executor` choice (else local); a backend
            name; an object with ``name``/``address``/``workers`` or such a mapping; or an
            :class:`Executor` instance, returned as it is.
        workers: the stage's own ``workers`` option; 0 or 1 runs in-process whatever the
            backend (the stage found the work too small for workers); ``None`` = the
            choice's ``workers``, else :func:`default_workers` (``ray``: the CPUs of the
            instance it starts; a running instance or cluster keeps its own).
        preload: modules worker processes import once (see the backends).

    Raises:
        RecipeError: unknown executor name.
        VetsetError: ``ray`` without the ``ray`` package installed.
    """
    if spec is not None and callable(getattr(spec, "map", None)):
        return spec
    name, address, choice_workers = current_executor() if spec is None else _fields(spec)
    if workers is not None and workers <= 1 and name in BACKENDS:
        return LocalExecutor(0)
    return get_executor(name, workers if workers is not None else choice_workers, address=address, preload=preload)


_PRESTARTED = False


def prestart(preload: Sequence[str]) -> bool:
    """Start this process's forkserver now, in a background thread, importing ``preload``.

    A run calls this before it loads the dataset, with the ``worker_modules`` of its stages,
    so that the forkserver's imports (0.5 s for the audit's modules, 1.3 s with the
    augmentation writer's, on one core) overlap with the load, and each stage's workers
    later start by a fork (milliseconds). It does nothing (returns ``False``) outside the
    local backend, with ``workers`` <= 1 chosen, with nothing to preload, or when an
    earlier call started the forkserver: a process has one forkserver, and its preload
    list is fixed when it starts. (A forkserver that a pool started before any call is
    not detected: this returns ``True``, and that forkserver keeps its own preload list.)

    Returns:
        whether a start was begun.
    """
    global _PRESTARTED
    name, _, workers = current_executor()
    workers = default_workers() if workers is None else workers
    if name != "local" or workers <= 1 or not preload or _PRESTARTED:
        return False
    from multiprocessing import forkserver

    _PRESTARTED = True
    mp.get_context("forkserver").set_forkserver_preload(["__main__", *dict.fromkeys(preload)])
    threading.Thread(target=forkserver.ensure_running, name="vetset-forkserver-start", daemon=True).start()
    return True


def release() -> None:
    """Shut down what a backend started in this process (a local Ray instance vetset started; nothing else)."""
    ray_backend = sys.modules.get("vetset.core.executor_ray")
    if ray_backend is not None:
        ray_backend.shutdown_started()
