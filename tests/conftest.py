"""Shared fixtures: an isolated FiftyOne database per test session, and real image data.

* ``FIFTYONE_DATABASE_DIR`` points at a fresh temporary folder before FiftyOne is
  imported, so test runs never touch a user's datasets or each other's.
* ``digits_dir``: scikit-learn's bundled digits written as an ImageFolder tree.
* ``hymenoptera_dir`` / ``cifar_test_dir``: unpacked from ``../shared/data`` (or
  ``$VETSET_SHARED_DATA``) into a session temp folder; tests using them skip when the
  archive is absent.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

_DB_DIR = tempfile.mkdtemp(prefix="vetset-test-db-")
os.environ["FIFTYONE_DATABASE_DIR"] = _DB_DIR
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["VETSET_PROGRESS"] = "0"
os.environ.pop("FIFTYONE_DATABASE_URI", None)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))


# Registered before FiftyOne is imported, so it runs after FiftyOne's own exit handler
# has stopped mongod (atexit runs handlers last-in, first-out).
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vetset-session")


@pytest.fixture(scope="session")
def digits_dir(session_tmp) -> Path:
    """``<tmp>/digits/{train,val}/<0-9>/*.png``: 1,797 real 8x8 handwritten digits."""
    from vetset.recipes.demo import write_digits

    return write_digits(session_tmp / "demo")


def _unpack(archive: Path, dest: Path) -> Path:
    if not archive.exists():
        pytest.skip(f"{archive} is absent (shared data is only in the project's own checkouts)")
    marker = dest / ".unpacked"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        marker.touch()
    return dest


@pytest.fixture(scope="session")
def hymenoptera_dir(session_tmp) -> Path:
    """The ants/bees photos: ``<root>/{train,val}/{ants,bees}/*`` (real sizes, a GIF placeholder)."""
    return _unpack(SHARED_DATA / "hymenoptera.tar", session_tmp / "hymenoptera") / "hymenoptera_data"


@pytest.fixture(scope="session")
def cifar_test_dir(session_tmp) -> Path:
    """CIFAR-10 test files as JPEGs: ``<root>/test/<class>/NNNN.jpg`` (10,000 images)."""
    return _unpack(SHARED_DATA / "cifar10" / "test.tar.gz", session_tmp / "cifar") / "test"


@pytest.fixture
def fresh_name(request) -> str:
    """A dataset name unique to the test."""
    import re

    return "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60]


@pytest.fixture
def hooks():
    from vetset.core.manager import Hooks

    return Hooks()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``recipes`` console script; returns the completed process."""
    exe = Path(os.sys.executable).parent / "recipes"
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=1800)
