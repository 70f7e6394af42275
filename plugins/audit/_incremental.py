"""Incremental re-audit: the image pass reads only files that changed since the last audit.

The image pass's record of each file (:func:`vetset.plugins.audit.stage.audit_image`: size,
mode, EXIF orientation, error, and every check's ``compute`` output) is kept in
``<run folder>/audit/image_pass.pkl`` with the file's size, modification time and inode
change time (ns). The next audit into the same run folder, with the same checks, check
options, decoding side and vetset version and code (the cache key: an edited or upgraded
check plugin reads everything again), decodes only files that are new
or whose size, modification time or change time differ; the change time is git's
``core.trustctime`` guard: a rewrite that keeps size and modification time (``touch -d``,
a copy with ``cp -p``/``rsync -t`` over the old file) still sets it, and no call can set it
back; the others' records are reused, and every check's ``evaluate``
(balance, duplicates, leakage, coverage, thresholds) runs again on all of them. Files that
vanished drop out of the cache when it is rewritten. Runs of more than :data:`MAX_IMAGES`
images keep no cache (the driver would hold every record, about 0.5 KB each, in memory).

The cache is a pickle written by vetset into the run folder the user chose; delete it (or the
folder) to read everything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vetset.core.atomic import atomic_write
from vetset.core.rerun import module_stamp, vetset_files_digest

CACHE_FILE = "image_pass.pkl"
MAX_IMAGES = 200_000
_FORMAT = 2


def cache_key(side: int | None, computes: Sequence[tuple[str, Any, Any]]) -> str:
    """SHA-1 of what decides a record: vetset's version and code (its files' sizes and
    modification times: :func:`vetset.core.rerun.vetset_files_digest`), the decoding side,
    and each compute (check name, function, the file defining it (so an edited or upgraded
    check plugin reads every image again), options as JSON)."""
    from vetset.core import __version__

    parts = [_FORMAT, __version__, vetset_files_digest(), side,
             [(name, f"{fn.__module__}.{fn.__qualname__}", module_stamp(fn),
               opts.model_dump_json() if hasattr(opts, "model_dump_json") else repr(opts))
              for name, fn, opts in computes]]
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


Stat = tuple[int, int, int]


def _stat(path: str) -> Stat | None:
    """``(size in bytes, modification time ns, inode change time ns)``, or ``None`` when unstattable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class PassCache:
    """The records of the last audit in one run folder, and the ones of this audit.

    Args:
        folder: ``<run folder>/audit``.
        key: :func:`cache_key` of this audit; a cache with another key is ignored.
    """

    def __init__(self, folder: Path, key: str):
        self.path = Path(folder) / CACHE_FILE
        self.key = key
        self.old: dict[str, tuple[Stat, tuple]] = {}
        self.new: dict[str, tuple[Stat, tuple]] = {}
        self.reused = 0
        try:
            with open(self.path, "rb") as f:
                data = pickle.load(f)
            if isinstance(data, dict) and data.get("key") == key:
                self.old = data["records"]
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, AttributeError, ImportError, TypeError):
            self.old = {}

    def todo(self, filepaths: Sequence[str]) -> tuple[list[int], list[Stat | None]]:
        """Indices of ``filepaths`` to decode (new, changed or unstattable), and every file's stat."""
        stats = [_stat(fp) for fp in filepaths]
        todo = []
        for i, (fp, st) in enumerate(zip(filepaths, stats)):
            prev = self.old.get(fp)
            if st is None or prev is None or tuple(prev[0]) != st:
                todo.append(i)
        return todo, stats

    def records(self, filepaths: Sequence[str], run_pass: Callable[[list[str]], Iterator[tuple]]) -> Iterator[tuple]:
        """Yield one record per path, in order: reused when unchanged, else from ``run_pass``
        (called once with the paths to decode, in order; it yields their records in order)."""
        todo, stats = self.todo(filepaths)
        self.reused = len(filepaths) - len(todo)
        fresh = run_pass([filepaths[i] for i in todo])
        want = iter(todo)
        nxt = next(want, None)
        for i, fp in enumerate(filepaths):
            if i == nxt:
                rec = next(fresh)
                nxt = next(want, None)
            else:
                rec = self.old[fp][1]
            if stats[i] is not None:
                self.new[fp] = (stats[i], rec)
            yield rec
        for _ in fresh:  # pragma: no cover - a pass that yields more records than paths
            raise RuntimeError("the image pass returned more records than paths")

    def save(self) -> None:
        """Write this audit's records atomically (the old cache stays until the new one is
        complete); nothing when every file was reused and none vanished (the file holds them)."""
        if self.reused == len(self.new) == len(self.old) and self.new.keys() == self.old.keys():
            return
        atomic_write(self.path, lambda f: pickle.dump({"key": self.key, "records": self.new}, f,
                                                     protocol=pickle.HIGHEST_PROTOCOL), mkdir=True)
