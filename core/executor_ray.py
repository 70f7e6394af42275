"""The Ray backend of the executor interface: per-image work as Ray tasks.

``get_executor("ray", workers, address=...)`` returns a :class:`RayExecutor`. It sends
items (image paths, augmentation tasks) in chunks to Ray tasks, one CPU each; the tasks
read the image files themselves (local paths, or fsspec URLs through
:func:`vetset.core.images.read_file`) and only their small per-item results travel back.
At most ``IN_FLIGHT_PER_CPU`` chunks per CPU are submitted or waiting to be yielded at any
time (backpressure with ``ray.wait``, the pattern of Ray's "limiting pending tasks" guide),
so the driver's memory does not grow with the number of images, and results come back in
input order, as :meth:`LocalExecutor.map <vetset.core.executor.LocalExecutor.map>` gives them.

Ray is started only when it is not running in this process yet: ``address=None`` starts a
local instance with ``num_cpus=workers`` (or joins the cluster ``RAY_ADDRESS`` names),
``"auto"`` joins the instance running on this machine, ``"ray://host:10001"`` a remote
cluster through Ray Client (its nodes need vetset installed). A Ray instance vetset
started is shut down by :func:`shutdown_started` (``use_executor`` calls it when the run
ends); one it joined, or one the caller started, is never shut down.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vetset.core.errors import VetsetError

#: Chunks submitted or waiting to be yielded, per CPU of the Ray instance: 2 keeps every
#: CPU busy while the driver takes results in order, and bounds what the driver holds.
IN_FLIGHT_PER_CPU = 2

_STARTED = False  # this process started the Ray instance it is connected to
_WORKER_READY: set[str] = set()  # in a Ray worker: preload modules already imported


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VetsetError("The ray executor needs the 'ray' package: pip install 'vetset[ray]'.") from None
    return ray


def _run_chunk(fn: Callable[[Any], Any], chunk: Sequence[Any], preload: tuple[str, ...]) -> list[Any]:
    """Ray task body: ``[fn(item) for item in chunk]``, after a once-per-worker setup.

    The setup imports ``preload`` and gives OpenCV one thread: Ray runs one task per CPU,
    so N tasks use N cores, not N x cores (what the local workers do too).
    """
    missing = [m for m in preload if m not in _WORKER_READY]
    if missing:
        for module in missing:
            try:
                importlib.import_module(module)
            except Exception:  # a module that fails to import is skipped, as the forkserver preload does
                pass
            _WORKER_READY.add(module)
        if "cv2" in sys.modules:
            sys.modules["cv2"].setNumThreads(1)
    return [fn(item) for item in chunk]


@functools.lru_cache(maxsize=1)
def _remote_chunk() -> Any:
    return _ray().remote(num_cpus=1)(_run_chunk)


class RayExecutor:
    """Ray tasks over chunks of items, at most ``IN_FLIGHT_PER_CPU`` chunks per CPU at a time.

    Args:
        workers: CPUs of the Ray instance when this executor starts one (``None`` = every
            CPU this process may use); ignored when joining a running instance or cluster,
            whose CPUs are what :attr:`workers` reports.
        address: ``None`` (start a local instance, or join ``$RAY_ADDRESS``), ``"auto"``,
            ``"host:port"`` or ``"ray://host:10001"``; see ``ray.init``.
        preload: modules each Ray worker imports once before its first chunk.

    Raises (on first use):
        VetsetError: the ``ray`` package is missing, or Ray cannot start or connect.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, preload: Sequence[str] = ()):
        from vetset.core.executor import default_workers

        self.requested = default_workers() if workers is None else max(1, int(workers))
        self.address = address or None
        self.preload = tuple(dict.fromkeys(("numpy", *preload)))
        self.peak_in_flight = 0  # most chunks submitted or held at once in the last map (for tests, benchmarks)

    # -- connection ------------------------------------------------------------------
    def _connect(self) -> Any:
        global _STARTED
        ray = _ray()
        if ray.is_initialized():
            return ray
        target = self.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
        if target is None:
            kwargs["num_cpus"] = self.requested
        else:
            _check_reachable(target)
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"the Ray cluster at {target}" if target else "a local Ray instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VetsetError(f"The ray executor cannot reach {where}: {first.rstrip('.')}.") from None
        _STARTED = target is None
        return ray

    @property
    def workers(self) -> int:
        """CPUs of the Ray instance or cluster (connects first), at least 1."""
        ray = self._connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    # -- the map ---------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None = None) -> Iterator[Any]:
        """Apply ``fn`` to every item in Ray tasks; results come back in input order.

        ``fn`` is shipped to the object store once (``ray.put``); each task gets a chunk
        of ``chunksize`` items (``None``: about 8 chunks per CPU, at most 256 items). A
        task's exception is raised here (as Ray's ``RayTaskError``, a subclass of the
        original type). On an error, an interrupt or an abandoned generator nothing more is
        submitted; the at most ``IN_FLIGHT_PER_CPU`` chunks per CPU already running finish
        on their own and their results are dropped. They are not ``ray.cancel``-led: in Ray
        2.x a cancel racing with the task's completion aborts the driver ("Check failed:
        it != submissible_tasks_.end()", ray-project/ray#54846; seen here with Ray 2.60).
        """
        if not len(items):
            return
        ray = self._connect()
        cpus = self.workers
        if chunksize is None:
            chunksize = max(1, min(256, len(items) // (cpus * 8) or 1))
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        limit = max(2, IN_FLIGHT_PER_CPU * cpus)
        remote = _remote_chunk()
        fn_ref = ray.put(fn)
        pending: dict[Any, int] = {}  # ObjectRef -> chunk index, submitted and not finished
        done: dict[int, list[Any]] = {}  # finished chunks waiting for their turn
        submitted = yielded = 0
        self.peak_in_flight = 0
        while yielded < len(chunks):
            while submitted < len(chunks) and submitted - yielded < limit:
                pending[remote.remote(fn_ref, chunks[submitted], self.preload)] = submitted
                submitted += 1
            self.peak_in_flight = max(self.peak_in_flight, submitted - yielded)
            if yielded not in done:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    done[pending.pop(ref)] = ray.get(ref)
                continue
            yield from done.pop(yielded)
            yielded += 1


def shutdown_started() -> None:
    """Shut down the Ray instance this process started (no-op when it joined one, or started none)."""
    global _STARTED
    if _STARTED:
        _STARTED = False
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()


#: Seconds to wait for a TCP connection to a Ray address before giving up.
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(target: str) -> None:
    """Fail fast when a ``host:port`` or ``ray://host:port`` address does not accept connections.

    ``ray.init`` itself retries an unreachable GCS address for about 14 minutes (measured
    with Ray 2.60) before it gives up; one TCP connect with a short timeout tells the same
    in seconds. ``auto``/``local`` and addresses without a port are left to Ray.

    Raises:
        VetsetError: nothing accepts connections at that host and port.
    """
    import socket

    rest = target.split("://", 1)[1] if "://" in target else target
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise VetsetError(f"The ray executor cannot reach the Ray cluster at {target}: nothing accepts connections "
                          f"at {host}:{port} ({exc.strerror or type(exc).__name__}); check --address or the "
                          "recipe's executor.address.") from None
