"""``recipes db``: the database server vetset commands share (see :mod:`vetset.core.database`).

* ``recipes db status``: what serves the datasets: the ``FIFTYONE_DATABASE_URI`` server, or
  the vetset-managed ``mongod`` (keeper and ``mongod`` pids, port, data folder, when it stops
  if unused), or FiftyOne's own service, or nothing.
* ``recipes db start``: start it now (or reuse it) and check that it answers.
* ``recipes db stop``: stop it once the commands using it have finished.
"""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console

from vetset.core import database

db_cli = typer.Typer(help="The database server vetset commands share: status, start, stop.", no_args_is_help=True)
# piped or redirected: lines stay whole (rich would use 80 columns)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _say(msg: str) -> None:
    console.print(msg, markup=False, highlight=False, soft_wrap=True)


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def status_lines(info: dict) -> list[str]:
    """Human lines for :func:`vetset.core.database.describe`'s dict."""
    mode = info["mode"]
    if mode == "uri":
        return [f"FIFTYONE_DATABASE_URI={info['uri']} (or database_uri in FiftyOne's config): vetset uses that "
                "server and starts none."]
    if mode == "fiftyone":
        return [f"VETSET_DB=fiftyone: each command uses FiftyOne's own database service (data {info['dbpath']})."]
    if mode == "foreign":
        return [f"a mongod vetset did not start (pid {info['mongod_pid']}, FiftyOne's own service) holds "
                f"{info['dbpath']}; vetset commands attach to it through FiftyOne and start none."]
    if mode == "none":
        return [f"no vetset database server runs; the next command starts one on {info['dbpath']} "
                f"(it stops after {info['idle_s']:g} s without a command; VETSET_DB_IDLE sets that)."]
    lines = [f"vetset database server: {info['uri']}  mongod pid {info['mongod_pid']}, keeper pid "
             f"{info['keeper_pid']}, data {info['dbpath']}",
             f"started {_clock(info['started_at'])}; stops after {info['idle_s']:g} s without a command"]
    if info.get("stopping"):
        lines.append("stopping: waiting for the commands using it to finish")
    elif info["in_use"]:
        lines.append("in use by a running command now")
    else:
        lines.append(f"idle; stops at {_clock(info['idle_deadline'])} unless a command runs (recipes db stop: now)")
    lines.append(f"other FiftyOne processes can share it: export FIFTYONE_DATABASE_URI={info['uri']}")
    return lines


@db_cli.command("status")
def status() -> None:
    """Say what database server vetset commands use: where it runs and when it stops."""
    for line in status_lines(database.describe()):
        _say(line)


@db_cli.command("start")
def start() -> None:
    """Start the shared server (or reuse the running one) and check that it answers a ping."""
    lease = database.ensure_server()
    info = database.describe()
    if lease is not None:
        import pymongo  # ~0.1 s; only here and in FiftyOne

        with pymongo.MongoClient(info["uri"], serverSelectionTimeoutMS=10000) as client:
            client.admin.command("ping")
    for line in status_lines(info):
        _say(line)


@db_cli.command("stop")
def stop() -> None:
    """Stop the vetset-managed server once the commands using it have finished."""
    if database.read_state() is not None and database.describe().get("in_use"):
        _say("waiting for the commands using the database to finish...")
    state = database.stop()
    _say(f"stopped the vetset database server (mongod pid {state.mongod_pid}, port {state.port})"
         if state else "no vetset database server runs.")
