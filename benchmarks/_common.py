"""What the benchmarks share: their work folder, the shared data unpacked once, one FiftyOne database folder."""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from pathlib import Path

#: The benchmarks' work folder (``VETSET_BENCH_DIR``, default ``<temp>/vetset-bench``), never the user's.
BENCH_DIR = Path(os.environ.get("VETSET_BENCH_DIR", Path(tempfile.gettempdir()) / "vetset-bench"))


def unpack(archive: Path, inner: str) -> Path:
    """Unpack ``archive`` under :data:`BENCH_DIR` once; returns the data folder ``<dest>/<inner>``.

    Exits with one sentence when the archive (from ``../shared/data``) is missing.
    """
    if not archive.exists():
        sys.exit(f"{archive} is missing: the benchmark needs the shared data (set VETSET_SHARED_DATA).")
    dest = BENCH_DIR / archive.name.split(".")[0]
    if not (dest / ".unpacked").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        (dest / ".unpacked").touch()
    return dest / inner


def private_database() -> None:
    """Point FiftyOne at the benchmarks' own database folder, kept between runs.

    Call before importing fiftyone. The folder is ``<temp>/vetset-bench/fiftyone-db``
    (``VETSET_BENCH_DIR`` moves ``<temp>/vetset-bench``), so the user's own FiftyOne
    database is never touched and runs do not leave a new folder each (a folder per run
    removed at exit would pull it from under the ``mongod`` that FiftyOne stops only
    after this process has gone). Several processes may share it, as FiftyOne's default
    database is shared; benchmarks name their datasets uniquely and delete them. A
    ``FIFTYONE_DATABASE_DIR`` or ``FIFTYONE_DATABASE_URI`` set by the caller wins.
    """
    if os.environ.get("FIFTYONE_DATABASE_DIR") or os.environ.get("FIFTYONE_DATABASE_URI"):
        return
    folder = BENCH_DIR / "fiftyone-db"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(folder)
