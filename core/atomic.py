"""Atomic replacement of files and links: readers see the old version or the new one, never half.

Both functions write next to the destination (``<name>.tmp-<pid>-<thread>``, in the same
folder, so on the same file system) and move the result into place with ``os.replace``,
which POSIX makes atomic; an error or Ctrl-C on the way removes the temp file and leaves
the destination as it was.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_path(path: str | os.PathLike) -> str:
    """The temp file name :func:`atomic_write` uses for ``path``: ``<path>.tmp-<pid>-<thread id>``,
    unique to the writing thread."""
    return f"{os.fspath(path)}.tmp-{os.getpid()}-{threading.get_ident()}"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any], *,
                 encoding: str = "utf-8", mkdir: bool = False) -> None:
    """Replace the file ``path`` with ``data``, atomically.

    Args:
        path: the destination file.
        data: ``bytes`` written as they are, ``str`` encoded with ``encoding``, or a
            callable that writes into the open binary temp file (``torch.save(obj, f)``,
            ``np.savez(f, ...)``, ``image.save(f, format="PNG")``).
        encoding: for ``str`` data.
        mkdir: create the destination's missing parent folders first.

    The file gets the permissions of a file ``open`` creates (``0o666`` less the umask).

    Raises:
        OSError: the folder is missing (without ``mkdir``) or not writable, or the disk is
            full; the destination is unchanged.
    """
    if mkdir:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            elif isinstance(data, str):
                f.write(data.encode(encoding))
            else:
                data(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_symlink(link: str | os.PathLike, target: str | os.PathLike, *, target_is_directory: bool = False) -> None:
    """Make ``link`` a symlink to ``target``, replacing what is there atomically (a reader
    follows the old link or the new one, never none).

    Raises:
        OSError: the folder is not writable or the file system has no symlinks; ``link``
            is unchanged.
    """
    tmp = temp_path(link)
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp, target_is_directory=target_is_directory)
        os.replace(tmp, link)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


__all__ = ["atomic_symlink", "atomic_write", "temp_path"]
