"""Packaging: one ``vetset`` namespace in the wheel, nothing bare at the top level."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # build from a copy of the tracked sources so the working tree gets no build/ folder
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        src, dst = REPO / rel, build / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(build)],
                   check=True, capture_output=True, text=True)
    (whl,) = out.glob("vetset-*.whl")
    return whl


def test_wheel_has_only_the_vetset_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    version = wheel.name.split("-")[1]
    tops = {n.split("/")[0] for n in names}
    assert tops == {"vetset", f"vetset-{version}.dist-info"}
    assert "vetset/__init__.py" not in names  # PEP 420 namespace
    for needed in ("vetset/core/manager.py", "vetset/recipes/bundled.py", "vetset/recipes/cli.py",
                   "vetset/recipes/full.yaml", "vetset/recipes/audit.yaml"):
        assert needed in names, needed
    entry_points = zipfile.ZipFile(wheel).read(f"vetset-{version}.dist-info/entry_points.txt").decode()
    assert "recipes = vetset.recipes.cli:run_main" in entry_points


def test_wheel_installs_and_imports_from_its_own_files(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    # -S: no .pth processing, so the editable install of the working tree is invisible;
    # dependencies still come from this venv's site-packages.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]))
    code = ("import vetset.core, vetset.plugins, vetset.recipes.cli as c, importlib.util as u;"
            "print(vetset.core.__file__); print(u.find_spec('core'), u.find_spec('plugins'));"
            "from vetset.core.manager import Hooks; print(sorted(Hooks().recipes))")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(str(site)), lines[0]
    assert lines[1].startswith("None ")  # no bare top-level core
    assert str(site) not in lines[1]  # a `plugins` here, if any, is FiftyOne's own, not ours
    assert "full" in lines[2] and "audit" in lines[2]


def test_editable_install_leaks_no_bare_packages(tmp_path):
    code = ("import importlib.util as u\n"
            "for name in ('core', 'plugins', 'recipes'):\n"
            "    spec = u.find_spec(name)\n"
            "    print(name, spec.origin if spec else None)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    found = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert found["core"] == "None" and found["recipes"] == "None", found
    # FiftyOne itself ships a top-level `plugins` package; ours must not be it
    assert not found["plugins"].startswith(str(REPO / "plugins")), found
