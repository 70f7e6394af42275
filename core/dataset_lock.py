"""One vetset command at a time per FiftyOne dataset.

FiftyOne's writes to a dataset's document are not safe against a second process writing
the same document: ``Dataset.save_view`` reads the dataset's list of saved views, deletes
and re-inserts the view's document and writes the whole list back, so two runs that save
their views at once leave the list with duplicate names and references to deleted views
(FiftyOne then reports "This dataset's saved view references are corrupted", and every
later run fails). ``recipes run`` and ``recipes plan`` therefore hold an exclusive
``flock`` on a file named after the dataset while they run; a second command on the same
dataset waits for the first, saying so (it then finds the first one's result, and keeps it
when nothing changed). Commands on different datasets run side by side.

The lock files live in ``<vetset cache>/locks/`` (:func:`vetset.core.cache.cache_dir`, as
the Hugging Face hub keeps its locks in its cache), one per database name and dataset
name, whichever server holds it (two servers with a dataset of the same name only wait
for each other); they are never deleted (a few bytes each). The lock is dropped when the
process exits. It covers the commands of one user on one machine; processes on other
machines that share a ``FIFTYONE_DATABASE_URI`` server are not seen.

This module imports only the standard library (it runs before FiftyOne is imported).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from vetset.core.cache import cache_dir
from vetset.core.database import database_name

#: This process's held locks, by dataset name: ``{name: file descriptor}``.
_held: dict[str, int] = {}


def lock_path(dataset: str) -> Path:
    """The lock file of ``dataset`` of the current database name (``<vetset cache>/locks/dataset-<sha1>.lock``)."""
    key = hashlib.sha1(f"{database_name()}\0{dataset}".encode()).hexdigest()[:20]
    return cache_dir() / "locks" / f"dataset-{key}.lock"


def hold_dataset(dataset: str, say: Callable[[str], object] | None = None) -> None:
    """Take the exclusive lock of ``dataset`` for the rest of this process, waiting while
    another process holds it (``say`` is told once, with that process's id when known).
    Idempotent within a process; :func:`release_dataset` drops it early.

    Raises:
        KeyboardInterrupt: Ctrl-C while waiting (nothing was taken).
        OSError: the lock folder cannot be created or the file opened.
    """
    if dataset in _held:
        return
    path = lock_path(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                say(f"waiting for another vetset command on dataset {dataset!r}"
                    + (f" (pid {holder})" if holder.isdigit() else "") + " to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[dataset] = fd


def release_dataset(dataset: str) -> None:
    """Drop this process's lock of ``dataset`` (a no-op when it holds none)."""
    fd = _held.pop(dataset, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock
