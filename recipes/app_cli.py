"""``recipes app``: the FiftyOne App on a dataset, with vetset's operators and panel.

* ``recipes app [--dataset NAME] [--port N] [--address A]`` starts the App server in
  remote mode (no browser is opened; it works on a headless machine, reach it through an
  SSH tunnel), prints the URL and serves until Ctrl-C. Unless ``--no-delegated``, it also
  runs a local delegated-operation worker (``fiftyone delegated launch``) so operations
  scheduled from the App (training, label noise...) actually run.
* ``recipes app install [--plugins-dir DIR] [--copy]`` links vetset's plugin into
  FiftyOne's plugins dir once, so every App session (``fo.launch_app``, ``fiftyone app
  launch``) has it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vetset.core.database import ensure_server

app_cli = typer.Typer(help="Open the FiftyOne App with vetset's operators and audit panel.",
                      invoke_without_command=True, no_args_is_help=False)
# piped or redirected: log lines stay whole and tables get room (rich would use 80 columns)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _say(msg: str) -> None:
    console.print(msg, markup=False, highlight=False, soft_wrap=True)


@app_cli.callback()
def app(
    ctx: typer.Context,
    dataset: str | None = typer.Option(None, "--dataset", help="FiftyOne dataset to open (default: none)."),
    port: int | None = typer.Option(None, "--port", help="Port of the App server (default: FiftyOne's "
                                       "default_app_port, 5151); 0 picks a free one."),
    address: str = typer.Option("localhost", "--address", help="Address to serve on (0.0.0.0 for all interfaces)."),
    delegated: bool = typer.Option(True, "--delegated/--no-delegated",
                                   help="Also run a worker for operations scheduled from the App."),
) -> None:
    """Launch the App (remote mode) on a dataset with vetset's plugin; print the URL; serve until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from vetset.plugins.fiftyone_app import launch as app_launch

    ensure_server()  # the shared server, before fiftyone is imported (the App server and worker inherit it)
    plugin_dir, installed = app_launch.ensure_plugin_visible()
    if installed:
        _say(f"vetset plugin: {plugin_dir}")
    else:
        _say(f"vetset plugin: {plugin_dir} (for this session, through FIFTYONE_PLUGINS_DIR="
             f"{os.environ['FIFTYONE_PLUGINS_DIR']}; `recipes app install` makes it permanent)")
    import fiftyone as fo

    if port is None:
        port = int(fo.config.default_app_port)
    elif port == 0:
        port = app_launch.free_port(address if address not in ("localhost", "") else "127.0.0.1")
    session = app_launch.launch(dataset, port, address)
    worker = _start_worker(port) if delegated else None
    _say(f"App: {app_launch.app_url(address, port, dataset)}")
    _say("remote mode: open that URL in a browser (from another machine: ssh -N -L "
         f"{port}:localhost:{port} <this host>); Ctrl-C stops the App.")
    sys.stdout.flush()

    def _stop(signum: int, frame: Any) -> None:  # kill/systemd/docker stop: shut down as on Ctrl-C
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()


def _start_worker(port: int) -> subprocess.Popen:
    """``fiftyone delegated launch`` in a child process sharing this environment.

    Its output goes to ``<temp>/vetset-delegated-<port>.log`` (printed), so a failing
    scheduled operation can be read there as well as on its run page in the App.
    """
    import tempfile

    exe = Path(sys.executable).parent / "fiftyone"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from fiftyone.core.cli import main; main()"]
    log_path = Path(tempfile.gettempdir()) / f"vetset-delegated-{port}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd + ["delegated", "launch"], env=dict(os.environ),
                                stdout=log, stderr=subprocess.STDOUT)
    _say(f"delegated-operation worker: pid {proc.pid}, log {log_path} (scheduled operations run there)")
    return proc


@app_cli.command("install")
def install(
    plugins_dir: Path | None = typer.Option(None, "--plugins-dir",
                                               help="FiftyOne plugins dir (default: fo.config.plugins_dir)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the files instead of linking them."),
) -> None:
    """Link (or copy) vetset's plugin into FiftyOne's plugins dir as @vetset/vetset."""
    from vetset.plugins.fiftyone_app import launch as app_launch

    dest = app_launch.install_plugin(plugins_dir, copy=copy)
    _say(f"installed @vetset/vetset: {dest} -> {dest.resolve() if dest.is_symlink() else 'copy'}")
    if plugins_dir is not None:
        _say(f"FiftyOne reads plugins from FIFTYONE_PLUGINS_DIR; set it to {plugins_dir.expanduser()} to use this one.")
    _say("check: fiftyone plugins list  (and fiftyone operators list)")
