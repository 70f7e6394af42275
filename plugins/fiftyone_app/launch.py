"""Make vetset's FiftyOne plugin visible to the App, and launch the App on a dataset.

FiftyOne finds plugins by walking ``fo.config.plugins_dir`` (env ``FIFTYONE_PLUGINS_DIR``,
default ``~/fiftyone/__plugins__``) for ``fiftyone.yml`` files, following symlinks. vetset
ships its plugin directory inside the package (``vetset/plugins/fiftyone_app``), so:

* ``recipes app install`` links that directory into the plugins dir as ``@vetset/vetset``
  (``--copy`` copies it instead, for file systems without symlinks); it then appears in
  every App session and in ``fiftyone plugins list``.
* ``recipes app`` without that step points ``FIFTYONE_PLUGINS_DIR`` at a small folder
  that links both vetset's plugin and the user's own plugins dir, for this launch only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from vetset.core.atomic import atomic_symlink
from vetset.core.errors import VetsetError

#: The ``name`` in ``fiftyone.yml``; operator URIs are ``@vetset/vetset/<operator>``.
PLUGIN_NAME = "@vetset/vetset"
#: Where ``install`` puts the plugin, relative to the plugins dir.
INSTALL_SUBDIR = Path("@vetset") / "vetset"


def package_plugin_dir() -> Path:
    """The plugin directory shipped in the installed package (holds ``fiftyone.yml``).

    Found without importing the plugin (which imports ``fiftyone.operators``).
    """
    spec = importlib.util.find_spec("vetset.plugins.fiftyone_app")
    if spec is None or not spec.submodule_search_locations:
        raise VetsetError("The vetset FiftyOne plugin (vetset.plugins.fiftyone_app) is not installed.")
    path = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (path / "fiftyone.yml").is_file():
        raise VetsetError(f"{path} has no fiftyone.yml; reinstall vetset (the wheel ships it as package data).")
    return path


def plugins_dir() -> Path:
    """FiftyOne's plugins dir (``fo.config.plugins_dir``)."""
    import fiftyone as fo

    return Path(fo.config.plugins_dir).expanduser()


def installed_plugin_dir() -> Path | None:
    """The directory FiftyOne loads ``@vetset/vetset`` from now, or ``None`` if it does not see it."""
    import fiftyone.plugins as fop

    for pd in fop.list_plugins(enabled=True):
        if pd.name == PLUGIN_NAME:
            return Path(pd.directory)
    return None


def install_plugin(target_dir: str | os.PathLike | None = None, copy: bool = False) -> Path:
    """Link (or copy) vetset's plugin into a FiftyOne plugins dir; rerunning replaces it.

    Args:
        target_dir: the plugins dir; default ``fo.config.plugins_dir``.
        copy: copy the files instead of making a symlink (the copy does not follow
            upgrades of vetset; run this again after upgrading).

    Returns:
        The path of the installed plugin (``<plugins dir>/@vetset/vetset``).

    Raises:
        VetsetError: the destination exists and is not an earlier vetset install.
    """
    src = package_plugin_dir()
    root = Path(target_dir).expanduser() if target_dir else plugins_dir()
    dest = root / INSTALL_SUBDIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        dest.unlink()
    elif dest.exists():
        yml = dest / "fiftyone.yml"
        if not (yml.is_file() and PLUGIN_NAME in yml.read_text(encoding="utf-8")):
            raise VetsetError(f"{dest} exists and is not a vetset plugin install; move it away first.")
        shutil.rmtree(dest)
    if copy:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dest.symlink_to(src, target_is_directory=True)
    return dest


def session_plugins_dir() -> Path:
    """A plugins dir holding links to vetset's plugin and to the user's plugins dir.

    Lives in the temp folder, one per user and per pair of targets
    (``vetset-fiftyone-plugins-<uid>-<8 hex of the targets>``): two checkouts' ``recipes
    app`` each get their own, and concurrent launches of one checkout share a folder whose
    links already point where they need (a link is replaced atomically when it does not).
    """
    import hashlib

    plugin = package_plugin_dir().resolve()
    user = plugins_dir()
    user = user.resolve() if user.is_dir() else None
    key = hashlib.sha1(f"{plugin}\0{user}".encode()).hexdigest()[:8]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"vetset-fiftyone-plugins-{uid}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    _link(root / "vetset", plugin)
    if user is not None and user != root.resolve():
        _link(root / "user-plugins", user)
    return root


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target``: kept when it already is, else replaced atomically."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    atomic_symlink(link, target, target_is_directory=True)


def ensure_plugin_visible() -> tuple[Path, bool]:
    """Make the App see vetset's plugin in this process and the servers it starts.

    Returns:
        ``(plugin directory FiftyOne will load, installed)`` where ``installed`` is False
        when a session plugins dir was set up through ``FIFTYONE_PLUGINS_DIR``.
    """
    import fiftyone as fo

    found = installed_plugin_dir()
    if found is not None:
        return found, True
    root = session_plugins_dir()
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(root)
    fo.config.plugins_dir = str(root)
    return root / "vetset", False


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (chosen by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def app_url(address: str, port: int, dataset: str | None = None) -> str:
    """The URL the App serves a dataset at (``http://<address>:<port>/datasets/<name>``)."""
    from urllib.parse import quote

    host = "localhost" if address in ("0.0.0.0", "", "localhost") else address
    return f"http://{host}:{port}/" + (f"datasets/{quote(dataset, safe='')}" if dataset else "")


def launch(dataset: str | None, port: int, address: str) -> Any:
    """Start the App server in remote mode (no browser is opened) on ``dataset``.

    Returns:
        The ``fo.Session``; the server runs until this process exits.

    Raises:
        DataError: the dataset does not exist.
    """
    import fiftyone as fo

    from vetset.plugins.fiftyone_app.api import load_fo_dataset

    ds = load_fo_dataset(dataset) if dataset else None
    return fo.launch_app(ds, port=port, address=address, remote=True, auto=False)
