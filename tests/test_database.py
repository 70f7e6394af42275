"""The vetset-managed database server (vetset.core.database, ``recipes db``).

Every test runs commands in subprocesses with ``FIFTYONE_DATABASE_URI`` removed and
``FIFTYONE_DATABASE_DIR`` set to a folder of its own, so they start servers of their own on
free ports and never touch a user's database; each test stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import start_mongod, stop_mongod

# one process = one command: use (or start) the server, write a document, print what it used
CLIENT = """
import json, os, sys
from vetset.core.database import ensure_server
lease = ensure_server()
import pymongo
with pymongo.MongoClient(os.environ["FIFTYONE_DATABASE_URI"], serverSelectionTimeoutMS=20000) as client:
    client.vetset_test.runs.insert_one({"run": sys.argv[1]})
print(json.dumps({"uri": os.environ["FIFTYONE_DATABASE_URI"], "keeper": lease.state.keeper_pid}), flush=True)
lease.release()
os._exit(0)  # pymongo joins its monitor threads at exit (about 0.6 s); this client has nothing left to do
"""


def _env(dbdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"}
    env.update(FIFTYONE_DATABASE_DIR=str(dbdir), **extra)
    return env


def _client(dbdir: Path, tag: str, **extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CLIENT, tag], env=_env(dbdir, **extra), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _state(dbdir: Path) -> dict | None:
    path = dbdir / "vetset" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def _cli(dbdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``recipes ARGS`` with exactly ``env`` (default: :func:`_env`; conftest's run_cli adds our URI back)."""
    exe = Path(sys.executable).parent / "recipes"
    return subprocess.run([str(exe), *args], env=env or _env(dbdir), capture_output=True, text=True, timeout=600)


def _stop(dbdir: Path) -> None:
    proc = _cli(dbdir, "db", "stop")
    assert proc.returncode == 0, proc.stderr


def _count(dbdir: Path) -> int:
    import pymongo

    state = _state(dbdir)
    with pymongo.MongoClient(f"mongodb://127.0.0.1:{state['port']}", serverSelectionTimeoutMS=20000) as client:
        return client.vetset_test.runs.count_documents({})


@pytest.fixture
def dbdir(tmp_path):
    path = tmp_path / "db"
    yield path
    state = _state(path)
    if state and _alive(state["keeper_pid"]):
        os.kill(state["keeper_pid"], signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(state["keeper_pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)


def test_back_to_back_runs_share_one_server_or_restart_it_cleanly(dbdir):
    """20 commands in a row, with an idle time so short that the keeper stops the server
    between some of them: every command succeeds and every write is kept."""
    log = dbdir / "vetset" / "keeper.log"
    for i in range(20):
        _client(dbdir, f"seq{i}", VETSET_DB_IDLE="1")
        if i == 9:  # once, wait until the keeper has stopped the idle server: the next command restarts it
            deadline = time.monotonic() + 30
            while "stopped after 1 s idle" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        elif i % 5 == 4:  # the next command arrives about when the keeper stops the idle server
            time.sleep(0.9 + 0.1 * (i // 5))
    keeper_log = log.read_text()
    assert "stopped after 1 s idle" in keeper_log
    _client(dbdir, "last", VETSET_DB_IDLE="600")
    assert _count(dbdir) == 21
    _stop(dbdir)
    assert _state(dbdir) is None


def test_concurrent_runs_start_one_server(dbdir):
    with ThreadPoolExecutor(4) as pool:
        used = list(pool.map(lambda i: _client(dbdir, f"par{i}", VETSET_DB_IDLE="600"), range(4)))
    assert len({u["uri"] for u in used}) == 1 and len({u["keeper"] for u in used}) == 1
    state = _state(dbdir)
    assert state["keeper_pid"] == used[0]["keeper"] and _alive(state["mongod_pid"])
    assert _count(dbdir) == 4
    status = _cli(dbdir, "db", "status")
    assert f"mongod pid {state['mongod_pid']}" in status.stdout and str(dbdir) in status.stdout
    assert "stops at" in status.stdout  # idle: the deadline is shown
    _stop(dbdir)
    assert not _alive(state["mongod_pid"]) and not _alive(state["keeper_pid"])
    assert "no vetset database server runs" in _cli(dbdir, "db", "status").stdout


def test_fiftyone_uses_the_server_and_datasets_persist(dbdir, tmp_path):
    """A FiftyOne process writes through the managed server (started while fiftyone is
    imported, as the CLI does); the next one finds its dataset. Also the contract that vetset
    finds FiftyOne's data folder (here from FiftyOne's config file) and mongod as FiftyOne does."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"database_dir": str(dbdir)}))
    env = _env(dbdir, VETSET_DB_IDLE="600", FIFTYONE_CONFIG_PATH=str(config))
    del env["FIFTYONE_DATABASE_DIR"]
    script = """
import json, sys
from vetset.core import database
lease = database.ensure_server(wait=False)
import fiftyone as fo
lease.wait()
from fiftyone.core.service import DatabaseService
if sys.argv[1] == "create":
    fo.Dataset("vetset-db-test", persistent=True).add_sample(fo.Sample(filepath="/x.jpg"))
print(json.dumps({"names": fo.list_datasets(), "dir": fo.config.database_dir, "ours": str(database.database_dir()),
                  "mongod": DatabaseService.find_mongod(), "our_mongod": str(database.mongod_path())}))
"""
    out = []
    for step in ("create", "read"):
        proc = subprocess.run([sys.executable, "-c", script, step], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "vetset-db-test" in out[1]["names"]
    assert out[0]["dir"] == out[0]["ours"] == str(dbdir)
    assert out[0]["mongod"] == out[0]["our_mongod"]
    _stop(dbdir)


def test_database_uri_users_are_unaffected(tmp_path):
    """FIFTYONE_DATABASE_URI set: nothing is started, nothing written to the data folder."""
    dbdir = tmp_path / "db"
    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(dbdir))  # conftest's FIFTYONE_DATABASE_URI stays
    proc = subprocess.run([sys.executable, "-c", "from vetset.core.database import ensure_server; "
                           "import os; print(ensure_server(), os.environ['FIFTYONE_DATABASE_URI'])"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", os.environ["FIFTYONE_DATABASE_URI"]]
    assert not dbdir.exists()
    status = _cli(dbdir, "db", "status", env=env)
    assert "vetset uses that server and starts none" in status.stdout


def test_a_mongod_vetset_did_not_start_is_left_to_fiftyone(tmp_path):
    """FiftyOne's own mongod (here: a plain one) holds the folder: vetset starts none and says so."""
    proc, folder, _ = start_mongod()
    try:
        dbdir = Path(folder)
        used = subprocess.run([sys.executable, "-c", "from vetset.core.database import ensure_server; "
                               "import os; print(ensure_server(), os.environ.get('FIFTYONE_DATABASE_URI'))"],
                              env=_env(dbdir), capture_output=True, text=True, timeout=60)
        assert used.returncode == 0, used.stderr
        assert used.stdout.split() == ["None", "None"]
        assert _state(dbdir) is None
        status = _cli(dbdir, "db", "status")
        assert f"a mongod vetset did not start (pid {proc.pid}" in status.stdout
    finally:
        stop_mongod(proc, folder)


def test_killed_keeper_takes_its_mongod_along_and_the_next_command_starts_anew(dbdir):
    first = _client(dbdir, "a", VETSET_DB_IDLE="600")
    state = _state(dbdir)
    os.kill(first["keeper"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(state["mongod_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(state["mongod_pid"])  # no orphan mongod
    second = _client(dbdir, "b", VETSET_DB_IDLE="600")
    assert second["keeper"] != first["keeper"]
    assert _count(dbdir) == 2
    _stop(dbdir)
