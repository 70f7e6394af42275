"""What the benchmarks share: one FiftyOne database folder for all of them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    folder = Path(os.environ.get("VETSET_BENCH_DIR", Path(tempfile.gettempdir()) / "vetset-bench")) / "fiftyone-db"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(folder)
