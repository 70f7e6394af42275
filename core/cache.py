"""vetset's per-user cache folder: things that are slow to compute and depend only on an
installed package's version (the report's compressed plotly.js).

The folder is ``VETSET_CACHE_DIR``, default ``$XDG_CACHE_HOME/vetset`` (``~/.cache/vetset``),
as the XDG base directory specification places per-user caches. Deleting it at any time is
safe: every entry is computed again when missing or unreadable. Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vetset.core.atomic import atomic_write


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("VETSET_CACHE_DIR"):
        return Path(os.environ["VETSET_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vetset"


def cached_text(name: str, compute: Callable[[], str], valid: Callable[[str], bool] | None = None) -> str:
    """The text stored as ``<cache_dir>/<name>``, computed by ``compute()`` and stored when missing.

    ``name`` must say everything the text depends on (e.g. a package version), since an
    existing entry is returned as it is when ``valid(text)`` is true (or ``valid`` is
    ``None``); an entry that fails ``valid`` (truncated, emptied or edited by hand) is
    computed again and replaced. A cache folder that cannot be written (read-only home,
    full disk) only costs the time: the computed text is returned.
    """
    path = cache_dir() / name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    else:
        if valid is None or valid(text):
            return text
    text = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    except OSError:
        pass
    return text
