"""The pluggy plugin system: built-ins, entry points, block lists, errors, the facade."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from vetset.core import Check, NoOptions, Stage, hookimpl, hookspecs
from vetset.core.errors import PluginError
from vetset.core.manager import BUILTIN_PLUGINS, Hooks, build_plugin_manager


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


def test_a_checks_views_section_and_options_register_with_it():
    """One register(Check(...)): its views and report section join the registries under the check's
    plugin, its options model joins the audit's options; a bad part or a reserved name names the plugin."""
    from pydantic import BaseModel

    from vetset.core import ReportSection, ViewSpec

    class Opts(BaseModel):
        level: int = 3

    class OneCheck:
        def __init__(self, name: str = "tp_check", views: tuple = ()):
            self.name, self.views = name, views

        @hookimpl
        def vetset_register_checks(self, register):
            register(Check(self.name, "tp", lambda ctx, o: {}, None, Opts, views=self.views,
                           report=ReportSection("tp_section", "TP", lambda r, c: None, order=5)))

    view = ViewSpec("audit/tp", "audit", lambda ds: ds.limit(1))
    pm = build_plugin_manager(builtins=("vetset.plugins.audit.stage", "vetset.plugins.audit.checks.balance"),
                              entry_points=False)
    pm.register(OneCheck(views=(view,)), name="tp-check-plugin")
    hooks = Hooks(pm)
    assert hooks.views["audit/tp"] is view and hooks.views.plugin_of("audit/tp") == "tp-check-plugin"
    assert hooks.report_sections.plugin_of("tp_section") == "tp-check-plugin"
    assert hooks.views.names()[:2] == ["audit/small_classes", "audit/tp"]  # checks' views in check order
    options = hooks.stages["audit"].options.model_validate({"checks": {"tp_check": {"level": 5}}})
    assert options.checks.tp_check.level == 5 and options.checks.balance.min_images == 200
    pm = build_plugin_manager(builtins=(), entry_points=False)
    pm.register(OneCheck(views=("audit/tp",)), name="bad-check-plugin")
    with pytest.raises(PluginError, match=r"'bad-check-plugin'.*'tp_check'.views holds a str, expected a ViewSpec"):
        _ = Hooks(pm).views
    pm = build_plugin_manager(builtins=("vetset.plugins.audit.stage",), entry_points=False)
    pm.register(OneCheck("model_config"), name="reserved-plugin")
    with pytest.raises(PluginError, match=r"'reserved-plugin'.*'model_config', a name pydantic models reserve"):
        _ = Hooks(pm).stages


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
    from vetset.core import Policy, ReportSection, ViewSpec

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
from vetset.core import Stage, hookimpl

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


def test_public_import_surface_is_light():
    """`vetset.core` names everything a plugin needs, and importing it (and those names) loads no
    FiftyOne, torch, timm or albumentations."""
    code = ("import sys, vetset.core as c\n"
            "heavy = ('fiftyone', 'torch', 'timm', 'albumentations', 'plotly')\n"
            "assert not [m for m in heavy if m in sys.modules], sorted(m for m in heavy if m in sys.modules)\n"
            "from vetset.core import *\n"
            "from vetset.core import report_kit\n"
            "assert callable(report_kit.table) and c.Check.__module__ == 'vetset.core.registry'\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "print(' '.join(c.__all__))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded, names = res.stdout.splitlines()
    assert loaded == "[]"
    assert {"hookimpl", "Check", "Stage", "Policy", "ViewSpec", "ReportSection", "AuditContext", "Run", "Hooks",
            "Action", "ReportContext", "DecodedImage", "Count", "NoOptions", "report_kit"} <= set(names.split())
    import vetset.core

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        vetset.core.Nope  # noqa: B018


def test_block_list_env_blocks_third_party(third_party_site):
    res = run_cli("plugins", env={"PYTHONPATH": str(third_party_site), "VETSET_BLOCK_PLUGINS": "redness"})
    assert res.returncode == 0 and "redness" not in res.stdout


INK_CHECK = '''
"""A third-party audit check: one module, one register(Check(...)), public imports only."""
from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from vetset.core import Action, Check, Count, ReportSection, ViewSpec, hookimpl, report_kit

__version__ = "1.2.0"


class InkOptions(BaseModel):
    """stages.audit.checks.ink options.

    Attributes:
        dark_level: a pixel is ink when its luma is below this (0-255).
        max_ink_share: an image is heavy_ink when more of its pixels than this are ink.
    """

    model_config = {"extra": "forbid"}

    dark_level: Count = Field(128, ge=1, le=255)
    max_ink_share: float = Field(0.35, gt=0.0, lt=1.0)


def ink_compute(image, options):
    return {"ink_share": round(float((image.gray() < options.dark_level).mean()), 6)}


def ink_evaluate(ctx, options):
    share = ctx.column("ink", "ink_share")
    ctx.set_field("ink_share", share, "float")
    heavy = ctx.readable & (share > options.max_ink_share)
    ctx.tag("heavy_ink", heavy)
    return {"mean_ink_share": round(float(np.nanmean(share)), 6), "by_class": ctx.count_by_class(heavy)["all"],
            "examples": ctx.examples(heavy, -share), "metrics": {"heavy_ink": int(heavy.sum())}}


def render_ink(result, ctx):
    ink = (report_kit.stage_block(result, "audit") or {}).get("checks", {}).get("ink")
    if not ink:
        return None
    rows = sorted(ink["by_class"].items())
    return (report_kit.stat_cards([("heavy ink images", ink["metrics"]["heavy_ink"], "audit.metrics.heavy_ink")])
            + report_kit.table(["class", "heavy ink"], rows, cls="ink-table")
            + report_kit.view_note("audit/heavy_ink", ctx))


def heavy_ink_action(result):
    found = report_kit.metric(result, "audit.metrics.heavy_ink")
    if not found or found[1] <= 0:
        return None
    return Action("heavy_ink", "low", f"Look at {found[1]:,} images drawn with heavy ink.",
                  "Thick strokes may hide the digit's shape.", found[0], found[1],
                  report_kit.share(found[1], report_kit.num_images(result)), ["heavy_ink"])


INK = Check(
    "ink", "share of dark (ink) pixels; heavy_ink above the maximum", ink_evaluate, ink_compute, InkOptions,
    views=(ViewSpec("audit/heavy_ink", "audit", lambda ds: ds.match_tags("heavy_ink").sort_by("ink_share", reverse=True),
                    "images with the most ink first"),),
    report=ReportSection("ink", "Ink coverage (acme)", render_ink, order=45),
    actions=(heavy_ink_action,))


@hookimpl
def vetset_register_checks(register):
    register(INK)
'''


def _install(tmp_path_factory, dist: str, module: str, source: str, entry: str) -> Path:
    src = tmp_path_factory.mktemp(dist)
    (src / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "1.2.0"
        [project.entry-points.vetset]
        {entry} = "{module}"
        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    (src / f"{module}.py").write_text(source)
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    return site


def test_third_party_check_is_one_module_and_an_entry_point(tmp_path_factory, digits_dir, tmp_path):
    """A check with options, a compute, a saved view, a report section and an action, installed as a
    package, runs through `recipes run`; its options sit under stages.audit.checks next to balance's."""
    import fiftyone as fo
    import numpy as np
    from PIL import Image

    from vetset.core.result import read_result

    site = _install(tmp_path_factory, "vetset-ink", "vetset_ink", INK_CHECK, "ink")
    recipe = tmp_path / "ink.yaml"
    recipe.write_text("name: ink\nstages:\n  audit:\n    select: [balance, ink]\n    checks:\n"
                      "      balance: {min_images: 100}\n      ink: {max_ink_share: 0.4}\n  report: {}\n")
    env = {"PYTHONPATH": str(site)}
    shown = run_cli("show", str(recipe), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "      ink:\n        dark_level: 128\n        max_ink_share: 0.4\n" in shown.stdout
    name = "t-third-party-ink"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    res = run_cli("run", str(recipe), "--data", str(digits_dir), "--dataset", name, "--out", str(tmp_path / "out"),
                  env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    result = read_result(tmp_path / "out")
    audit = result["stages"]["audit"]
    assert audit["checks_run"] == ["balance", "ink"]
    assert audit["options"]["checks"]["ink"] == {"dark_level": 128, "max_ink_share": 0.4}
    assert result["recipe"]["stages"]["audit"]["checks"]["balance"]["min_images"] == 100
    # the same numbers computed here from the PNG files: ink = luma below 128
    files = sorted(digits_dir.rglob("*.png"))
    shares = np.array([(np.asarray(Image.open(p).convert("L")) < 128).mean() for p in files])
    heavy = int((shares > 0.4).sum())
    assert 0 < heavy < len(files) and audit["metrics"]["heavy_ink"] == heavy
    assert audit["checks"]["ink"]["mean_ink_share"] == pytest.approx(shares.mean(), abs=1e-5)
    ds = fo.load_dataset(name)
    assert ds.count_sample_tags().get("heavy_ink") == heavy
    view = ds.load_saved_view("audit/heavy_ink")
    assert len(view) == heavy and view.first()["ink_share"] == pytest.approx(shares.max(), abs=1e-6)
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Ink coverage (acme)" in html and 'data-key="audit.metrics.heavy_ink"' in html and "ink-table" in html
    sections = {s["name"]: s for s in result["stages"]["report"]["sections"]}
    assert sections["ink"]["plugin"] == "ink" and sections["ink"]["status"] == "ok"
    action = next(a for a in result["stages"]["report"]["actions"] if a["id"] == "heavy_ink")
    assert action["value"] == heavy and action["share"] == pytest.approx(heavy / len(files))
    fo.delete_dataset(name)
