"""The FiftyOne plugin directory: shipped in the wheel, installed, discovered, launched."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

PLUGIN_SRC = REPO / "plugins" / "fiftyone_app"


def _yml() -> dict:
    return yaml.safe_load((PLUGIN_SRC / "fiftyone.yml").read_text())


@pytest.fixture
def plugins_dir(tmp_path, monkeypatch):
    """``fo.config.plugins_dir`` (and FIFTYONE_PLUGINS_DIR) pointed at an empty folder."""
    import fiftyone as fo

    root = tmp_path / "fo-plugins"
    root.mkdir()
    monkeypatch.setattr(fo.config, "plugins_dir", str(root))
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(root))
    return root


def test_package_plugin_dir_is_the_source_folder():
    from vetset.plugins.fiftyone_app.launch import package_plugin_dir

    assert package_plugin_dir() == PLUGIN_SRC.resolve()


def test_install_links_and_fiftyone_registers_every_listed_operator(plugins_dir):
    import fiftyone.plugins as fop
    from fiftyone.plugins.context import PluginContext

    from vetset.plugins.fiftyone_app.launch import PLUGIN_NAME, install_plugin, installed_plugin_dir

    assert installed_plugin_dir() is None
    dest = install_plugin(plugins_dir)
    assert dest == plugins_dir / "@vetset" / "vetset" and dest.is_symlink()
    assert dest.resolve() == PLUGIN_SRC.resolve()
    assert install_plugin(plugins_dir) == dest  # rerun replaces, no duplicate
    assert installed_plugin_dir() == dest

    (pd,) = [p for p in fop.list_plugins() if p.name == PLUGIN_NAME]
    listed = _yml()["operators"] + _yml()["panels"]
    assert pd.operators == listed
    pctx = PluginContext(pd)
    pctx.register_all()
    assert not pctx.errors, pctx.errors
    assert sorted(i.name for i in pctx.instances) == sorted(listed)
    assert {i.uri for i in pctx.instances} >= {f"{PLUGIN_NAME}/run_audit", f"{PLUGIN_NAME}/open_saved_view"}


def test_install_copy_and_refuses_a_foreign_folder(plugins_dir):
    from vetset.core.errors import VetsetError
    from vetset.plugins.fiftyone_app.launch import install_plugin

    dest = install_plugin(plugins_dir, copy=True)
    assert not dest.is_symlink() and (dest / "fiftyone.yml").is_file() and (dest / "operators.py").is_file()
    assert not (dest / "__pycache__").exists()
    install_plugin(plugins_dir)  # a copy is replaced by a link
    assert dest.is_symlink()
    dest.unlink()
    dest.mkdir()
    (dest / "keep.txt").write_text("someone else's")
    with pytest.raises(VetsetError, match="not a vetset plugin install"):
        install_plugin(plugins_dir)
    assert (dest / "keep.txt").read_text() == "someone else's"


def test_session_dir_keeps_the_users_plugins(plugins_dir, monkeypatch):
    import fiftyone as fo

    from vetset.plugins.fiftyone_app.launch import ensure_plugin_visible, installed_plugin_dir

    other = plugins_dir / "someone" / "theirs"
    other.mkdir(parents=True)
    (other / "fiftyone.yml").write_text('name: "@someone/theirs"\noperators: []\n')
    found, installed = ensure_plugin_visible()
    assert installed is False
    root = Path(os.environ["FIFTYONE_PLUGINS_DIR"])
    assert fo.config.plugins_dir == str(root) and found == root / "vetset"
    assert installed_plugin_dir() == root / "vetset"
    import fiftyone.plugins as fop

    names = {p.name for p in fop.list_plugins()}
    assert {"@vetset/vetset", "@someone/theirs"} <= names


def test_app_url():
    from vetset.plugins.fiftyone_app.launch import app_url

    assert app_url("127.0.0.1", 5151, "my data") == "http://127.0.0.1:5151/datasets/my%20data"
    assert app_url("0.0.0.0", 8080, None) == "http://localhost:8080/"


def test_cli_app_install_and_missing_dataset(tmp_path):
    target = tmp_path / "plugins"
    res = run_cli("app", "install", "--plugins-dir", str(target))
    assert res.returncode == 0, res.stderr
    assert (target / "@vetset" / "vetset" / "fiftyone.yml").is_file()
    assert "installed @vetset/vetset" in res.stdout
    res = run_cli("app", "--dataset", "no-such-dataset", "--port", "0", "--no-delegated",
                  env={"FIFTYONE_PLUGINS_DIR": str(target)})
    assert res.returncode == 2
    assert "FiftyOne dataset 'no-such-dataset' does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_wheel_ships_the_plugin_and_it_is_discoverable(tmp_path):
    """Build the wheel, install it elsewhere, and let FiftyOne find the plugin from there."""
    build = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            (build / rel).write_bytes(src.read_bytes())
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(build)],
                   check=True, capture_output=True, text=True)
    (whl,) = out.glob("vetset-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for rel in ("fiftyone.yml", "__init__.py", "operators.py", "panel.py", "forms.py"):
        assert f"vetset/plugins/fiftyone_app/{rel}" in names, rel
    assert {"vetset/plugins/fiftyone_app/api.py", "vetset/plugins/fiftyone_app/launch.py", "vetset/recipes/app_cli.py"} <= names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(whl)],
                   check=True, capture_output=True, text=True)
    plugins = tmp_path / "fo-plugins"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
               FIFTYONE_PLUGINS_DIR=str(plugins))
    code = ("from vetset.plugins.fiftyone_app.launch import install_plugin, installed_plugin_dir;"
            "d = install_plugin(); print(d.resolve()); print(installed_plugin_dir())")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    resolved, found = res.stdout.splitlines()[-2:]
    assert resolved == str((site / "vetset" / "plugins" / "fiftyone_app").resolve())
    assert found == str(plugins / "@vetset" / "vetset")


def test_session_plugin_folders_of_two_checkouts_do_not_collide(tmp_path, monkeypatch):
    """Each checkout's `recipes app` gets its own session plugins folder; a second launch of the
    same checkout reuses its folder and leaves correct links alone."""
    import vetset.plugins.fiftyone_app.launch as launch

    a, b = tmp_path / "a" / "fiftyone_app", tmp_path / "b" / "fiftyone_app"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    monkeypatch.setattr(launch, "plugins_dir", lambda: tmp_path / "no-user-plugins")
    monkeypatch.setattr(launch, "package_plugin_dir", lambda: a)
    root_a = launch.session_plugins_dir()
    link = root_a / "vetset"
    before = link.lstat().st_ino
    assert launch.session_plugins_dir() == root_a and link.lstat().st_ino == before  # kept, not rebuilt
    monkeypatch.setattr(launch, "package_plugin_dir", lambda: b)
    root_b = launch.session_plugins_dir()
    assert root_b != root_a
    assert (root_a / "vetset").resolve() == a.resolve() and (root_b / "vetset").resolve() == b.resolve()
    assert sorted(p.name for p in root_a.iterdir()) == ["vetset"]
    for root in (root_a, root_b):  # folders of this test's temporary checkouts
        for child in root.iterdir():
            child.unlink()
        root.rmdir()
