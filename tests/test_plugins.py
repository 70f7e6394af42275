"""The pluggy plugin system: built-ins, entry points, block lists, errors, the facade."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from vetset.core import hookspecs
from vetset.core.errors import PluginError
from vetset.core.hookspecs import hookimpl
from vetset.core.manager import BUILTIN_PLUGINS, Hooks, build_plugin_manager
from vetset.core.registry import Check, NoOptions, Stage


def _hookspec_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("vetset_")]


def test_every_hookspec_is_documented_and_exercised():
    """Meta-test: each hookspec has a docstring with Args and is called somewhere in tests."""
    tests_text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    core_text = (REPO / "core" / "manager.py").read_text()
    for name in _hookspec_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Args:" in doc, f"{name} has no Args section"
        assert name in core_text, f"{name} is never called from the facade"
        facade = name.replace("vetset_register_", "").replace("vetset_", "")
        assert name in tests_text or facade in tests_text, f"{name} is not exercised by any test"
    assert len(_hookspec_names()) >= 11


def test_firstresult_is_declared_only_for_make_hooks():
    pm = build_plugin_manager(builtins=(), entry_points=False)
    for name in _hookspec_names():
        opts = getattr(pm.hook, name).spec.opts
        assert opts.get("firstresult", False) == name.startswith("vetset_make_"), name


def test_builtins_are_registered_by_dotted_name():
    hooks = Hooks()
    names = [n for n, _ in hooks.pm.list_name_plugin()]
    present = [b for b in BUILTIN_PLUGINS if b in names]
    assert present, "no built-in plugin registered"
    assert names[: len(present)] == present  # in the documented order
    assert "full" in hooks.recipes and "audit" in hooks.recipes


class _TwoChecks:
    """A throwaway plugin registering a check whose name collides with another plugin's."""

    def __init__(self, name: str):
        self.check_name = name

    @hookimpl
    def vetset_register_checks(self, register):
        register(Check(name=self.check_name, description="dup", evaluate=lambda ctx, opts: {}))


def test_duplicate_registration_names_both_plugins():
    pm = build_plugin_manager(builtins=(), entry_points=False)
    pm.register(_TwoChecks("same"), name="first-plugin")
    pm.register(_TwoChecks("same"), name="second-plugin")
    with pytest.raises(PluginError) as err:
        _ = Hooks(pm).checks
    assert "first-plugin" in str(err.value) and "second-plugin" in str(err.value) and "'same'" in str(err.value)


def test_wrong_type_is_rejected_with_plugin_name():
    class Bad:
        @hookimpl
        def vetset_register_stages(self, register):
            register({"name": "not-a-stage"})

    pm = build_plugin_manager(builtins=(), entry_points=False)
    pm.register(Bad(), name="bad-plugin")
    with pytest.raises(PluginError, match="bad-plugin.*expected a Stage, got dict"):
        _ = Hooks(pm).stages


def test_failing_hook_names_the_plugin():
    class Broken:
        @hookimpl
        def vetset_register_policies(self, register):
            raise RuntimeError("boom")

    pm = build_plugin_manager(builtins=(), entry_points=False)
    pm.register(Broken(), name="broken-plugin")
    with pytest.raises(PluginError, match="broken-plugin.*vetset_register_policies.*boom"):
        _ = Hooks(pm).policies


def test_failing_import_names_the_plugin():
    with pytest.raises(PluginError, match="vetset_no_such_plugin_xyz"):
        build_plugin_manager(builtins=("vetset_no_such_plugin_xyz",), entry_points=False)


def test_block_list_env_blocks_builtin_by_short_name(monkeypatch):
    monkeypatch.setenv("VETSET_BLOCK_PLUGINS", "bundled")
    hooks = Hooks()
    assert hooks.pm.is_blocked("vetset.recipes.bundled")
    assert len(hooks.recipes) == 0


def test_in_process_plugin_registers_everything_and_unregisters():
    """A throwaway plugin contributes one of each registrable thing; unregister in finally."""
    from vetset.core.registry import Policy, ReportSection, ViewSpec

    class Everything:
        @hookimpl
        def vetset_register_stages(self, register):
            register(Stage(name="tp_stage", run=lambda run, opts: {"ok": True}))

        @hookimpl
        def vetset_register_views(self, register):
            register(ViewSpec(name="tp/view", stage="tp_stage", build=lambda ds: ds.limit(1)))

        @hookimpl
        def vetset_register_report_sections(self, register):
            register(ReportSection(name="tp_section", title="TP", render=lambda r, c: "<p>tp</p>"))

        @hookimpl
        def vetset_register_policies(self, register):
            register(Policy(name="tp_policy", pipeline={"transform": {}}))

        @hookimpl
        def vetset_register_transforms(self, register):
            register("TpTransform", type("TpTransform", (), {}))

        @hookimpl
        def vetset_register_recipes(self, register):
            register("tp_recipe", "/nonexistent/tp.yaml")

    pm = build_plugin_manager()
    plugin = Everything()
    pm.register(plugin, name="tp-everything")
    try:
        hooks = Hooks(pm)
        assert hooks.stages.plugin_of("tp_stage") == "tp-everything"
        assert "tp/view" in hooks.views and "tp_section" in hooks.report_sections
        assert hooks.policies["tp_policy"].pipeline == {"transform": {}}
        assert hooks.transforms["TpTransform"].__name__ == "TpTransform"
        assert hooks.recipes["tp_recipe"] == "/nonexistent/tp.yaml"
    finally:
        pm.unregister(plugin)
    assert "tp_stage" not in Hooks(pm).stages


def test_lifecycle_hooks_fire_in_order(digits_dir, fresh_name, tmp_path):
    """on_dataset_loaded, on_stage_finished and on_run_finished fire for a real run."""
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    events: list[str] = []

    class Recorder:
        @hookimpl
        def vetset_register_stages(self, register):
            register(Stage(name="count", run=lambda run, opts: {"n": len(run.dataset)}, options=NoOptions))

        @hookimpl
        def vetset_on_dataset_loaded(self, run):
            events.append(f"loaded:{len(run.dataset)}")

        @hookimpl
        def vetset_on_stage_finished(self, run, stage, result):
            events.append(f"stage:{stage}:{result['n']}")

        @hookimpl
        def vetset_on_run_finished(self, run, result):
            events.append(f"run:{result['stages']['count']['n']}")

    pm = build_plugin_manager()
    rec = Recorder()
    pm.register(rec, name="recorder")
    try:
        hooks = Hooks(pm)
        recipe = parse_recipe({"name": "t", "stages": {"count": {}}}, hooks.stages)
        Run(recipe, hooks, data=digits_dir, dataset=fresh_name, out_dir=tmp_path, log=lambda m: None).execute()
    finally:
        pm.unregister(rec)
    assert events == ["loaded:1797", "stage:count:1797", "run:1797"]


THIRD_PARTY = '''
"""A third-party vetset plugin, installed from its own distribution."""
from vetset.core.hookspecs import hookimpl
from vetset.core.registry import Stage

__version__ = "0.3.1"


def _mean_red(run, options):
    import numpy as np
    from vetset.core.images import load_rgb
    view = run.dataset.match_tags("train").limit(20)
    values = [float(load_rgb(p)[..., 0].mean()) for p in view.values("filepath")]
    return {"images": len(values), "mean_red": float(np.mean(values))}


@hookimpl
def vetset_register_stages(register):
    register(Stage(name="redness", run=_mean_red, description="mean red level of 20 train images"))
'''


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """Build and install (into a private --target folder) a tiny plugin distribution."""
    src = tmp_path_factory.mktemp("vetset-redness")
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "vetset-redness"
        version = "0.3.1"
        [project.entry-points.vetset]
        redness = "vetset_redness"
        [tool.setuptools]
        py-modules = ["vetset_redness"]
    '''))
    (src / "vetset_redness.py").write_text(THIRD_PARTY)
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    return site


def test_third_party_plugin_package_runs_inside_recipes_run(third_party_site, digits_dir, tmp_path):
    recipe = tmp_path / "red.yaml"
    recipe.write_text("name: red\nstages:\n  redness: {}\n")
    env = {"PYTHONPATH": str(third_party_site)}
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "redness" in listed.stdout and "0.3.1" in listed.stdout and "register_stages" in listed.stdout
    res = run_cli("run", str(recipe), "--data", str(digits_dir), "--dataset", "t-third-party",
                  "--out", str(tmp_path / "out"), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    from vetset.core.result import read_result

    block = read_result(tmp_path / "out")["stages"]["redness"]
    assert block["images"] == 20
    # digits are dark ink on white paper: the mean red level is high but below pure white
    assert 150 < block["mean_red"] < 255


def test_allow_list_env_keeps_third_party_out(third_party_site):
    res = run_cli("plugins", env={"PYTHONPATH": str(third_party_site), "VETSET_LOAD_PLUGINS": ""})
    assert res.returncode == 0 and "redness" not in res.stdout


def test_block_list_env_blocks_third_party(third_party_site):
    res = run_cli("plugins", env={"PYTHONPATH": str(third_party_site), "VETSET_BLOCK_PLUGINS": "redness"})
    assert res.returncode == 0 and "redness" not in res.stdout
