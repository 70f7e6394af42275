"""The ``audit`` stage through a recipe on the digits, its options, and a third-party check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import BaseModel

from vetset.core import Check, hookimpl
from vetset.core.errors import ChecksFailed, RecipeError


def _fresh(name: str) -> str:
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return name


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    hooks = Hooks()
    recipe = parse_recipe({"name": "audit-only", "stages": {"audit": {"workers": 0}},
                           "fail_on": {"audit.metrics.classes_below_min": 0}}, hooks.stages)
    run = Run(recipe, hooks, data=digits_dir, dataset=_fresh("t-audit-digits"),
              out_dir=tmp_path_factory.mktemp("digits-out"), log=lambda m: None)
    with pytest.raises(ChecksFailed, match="classes_below_min = 10 exceeds 0"):
        run.execute()
    return run


def test_stage_result_follows_the_contract(digits_run):
    result = json.loads((digits_run.out_dir / "result.json").read_text(encoding="utf-8"))
    block = result["stages"]["audit"]
    assert {"num_images", "images_per_s", "options", "class_counts", "coverage", "checks", "metrics"} <= set(block)
    assert block["num_images"] == 1797 and block["images_per_s"] > 0
    assert set(block["class_counts"]) == {"train", "val", "all"}
    assert sum(block["class_counts"]["all"].values()) == 1797 and len(block["class_counts"]["train"]) == 10
    assert set(block["coverage"]) == {"train", "val", "all"}
    for split in block["coverage"]:
        assert set(block["coverage"][split]) == {"orientation", "colour", "clarity"}
        for prop, bins in (("orientation", {"landscape", "portrait", "square"}), ("colour", {"colour", "grayscale", "bw"}),
                           ("clarity", {"blurry", "normal", "sharp"})):
            assert all(set(row) == bins for row in block["coverage"][split][prop].values())
    for key in ("classes_below_min", "leakage_groups", "duplicate_groups", "conflicting_label_groups", "unreadable",
                "imbalance_ratio"):
        assert isinstance(block["metrics"][key], (int, float)), key
    assert result["fail_on"]["checked"]["audit.metrics.classes_below_min"]["value"] == 10
    assert block["options"]["checks"]["balance"]["min_images"] == 200
    # the 8x8 digits are all upscaled to 128 px to measure sharpness, and the report says so
    up = block["checks"]["clarity"]["upscaled"]
    assert up["count"] == 1797 and up["blurry"] == block["metrics"]["blurry"]


def test_digits_findings(digits_run):
    """8x8 grayscale digits: all tiny, grayscale, square, and too small for perceptual hashing."""
    block = digits_run.results["audit"]
    m = block["metrics"]
    assert m["tiny"] == 1797 and m["grayscale"] == 1797 and m["bw"] == 0 and m["unreadable"] == 0
    assert m["duplicate_groups"] == 0 and block["checks"]["duplicates"]["bytes_only"] == 1797
    orient = block["coverage"]["all"]["orientation"]
    assert all(row == {"landscape": 0, "portrait": 0, "square": n} for row, n in
               zip(orient.values(), block["class_counts"]["all"].values()))
    ds = digits_run.dataset
    views = ds.list_saved_views()
    for name in ("audit/blurry", "audit/tiny", "audit/leakage", "audit/unreadable", "audit/small_classes"):
        assert name in views, name
    assert len(ds.load_saved_view("audit/tiny")) == 1797
    assert len(ds.load_saved_view("audit/small_classes")) == 1797  # every class is below 200 train images


def test_choosing_checks_writes_only_theirs(digits_dir):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.core.manager import Hooks
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    ds, _ = load_dataset(digits_dir, name=_fresh("t-audit-digits-some"))
    block = run_audit(ds, AuditOptions(select=["duplicates", "balance"], workers=0), Hooks(), log=lambda m: None)
    assert block["checks_run"] == ["balance", "duplicates"] and set(block["checks"]) == {"balance", "duplicates"}
    schema = ds.get_field_schema()
    assert "phash" in schema and "metadata" in schema and "sharpness" not in schema and "colour_mode" not in schema
    assert block["coverage"] == {} and "unreadable" not in block["metrics"]
    fo.delete_dataset(ds.name)


def test_bad_options_name_the_key(hooks):
    from vetset.core.recipe import parse_recipe
    from vetset.plugins.audit.stage import AuditOptions, select_checks

    with pytest.raises(RecipeError, match=r"select: 'sharpnes' is not a registered check; registered checks: balance, "):
        select_checks(hooks, AuditOptions(select=["sharpnes"]))
    with pytest.raises(RecipeError, match="stages.audit.checks.clarity: .*sharp_above"):
        parse_recipe({"name": "x", "stages": {"audit": {"checks": {"clarity": {"blurry_below": 500, "sharp_above": 100}}}}},
                     hooks.stages)
    with pytest.raises(RecipeError, match="stages.audit.checks.duplicates.radius"):
        parse_recipe({"name": "x", "stages": {"audit": {"checks": {"duplicates": {"radius": -1}}}}}, hooks.stages)
    with pytest.raises(RecipeError, match=r"stages.audit.checks.sharpnes: unknown key; allowed keys: balance, orientation"):
        parse_recipe({"name": "x", "stages": {"audit": {"checks": {"sharpnes": {}}}}}, hooks.stages)


class RedOptions(BaseModel):
    model_config = {"extra": "forbid"}
    min_share: float = 0.5


def red_compute(image, options):
    arr = image.array.astype(int)
    return {"red_share": float(((arr[..., 0] > arr[..., 1] + 30) & (arr[..., 0] > arr[..., 2] + 30)).mean())}


def red_evaluate(ctx, options):
    share = ctx.column("red", "red_share")
    ctx.set_field("red_share", share.tolist(), "float")
    mostly = ctx.readable & (share >= options.min_share)
    ctx.tag("mostly_red", mostly)
    return {"mostly_red": ctx.examples(mostly), "metrics": {"mostly_red": int(mostly.sum())}}


class RedPlugin:
    @hookimpl
    def vetset_register_checks(self, register):
        register(Check("red", "share of strongly red pixels", red_evaluate, red_compute, RedOptions))


def test_third_party_check_runs_with_its_options(hymenoptera_dir, tmp_path):
    import shutil

    from vetset.core.dataset import load_dataset
    from vetset.core.manager import Hooks, build_plugin_manager
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    data = tmp_path / "data" / "ants"
    data.mkdir(parents=True)
    for p in sorted((hymenoptera_dir / "train" / "ants").iterdir())[:6]:
        shutil.copyfile(p, data / p.name)
    red = np.zeros((60, 80, 3), np.uint8)
    red[..., 0] = 220
    from PIL import Image

    Image.fromarray(red).save(data / "red.png")
    pm = build_plugin_manager()
    plugin = RedPlugin()
    pm.register(plugin, name="test-red")
    try:
        hooks = Hooks(pm)
        ds, _ = load_dataset(tmp_path / "data", name=_fresh("t-audit-red"))
        with pytest.raises(RecipeError, match=r"stages.audit.checks.red.min_shar: Extra inputs"):
            run_audit(ds, AuditOptions(select=["red"], checks={"red": {"min_shar": 1}}), hooks)
        block = run_audit(ds, AuditOptions(select=["red", "balance"], workers=0, checks={"red": {"min_share": 0.9}}),
                          hooks, log=lambda m: None)
    finally:
        pm.unregister(plugin)
    assert block["checks_run"] == ["balance", "red"] and block["metrics"]["mostly_red"] == 1
    assert [e["filepath"].rsplit("/", 1)[1] for e in block["checks"]["red"]["mostly_red"]] == ["red.png"]
    assert ds.count_sample_tags()["mostly_red"] == 1 and max(ds.values("red_share")) == 1.0


def test_plugin_and_builtin_check_options_share_one_key_path(hooks):
    """stages.audit.checks.<name>.<option> for every check; the old keys are read, or named in one sentence."""
    from vetset.core.manager import Hooks, build_plugin_manager
    from vetset.core.recipe import parse_recipe

    pm = build_plugin_manager()
    plugin = RedPlugin()
    pm.register(plugin, name="test-red")
    try:
        stages = Hooks(pm).stages
        new = parse_recipe({"name": "x", "stages": {"audit": {
            "select": ["balance", "red"], "checks": {"balance": {"min_images": 7}, "red": {"min_share": 0.8}}}}}, stages)
        opts = new.options("audit")
        assert opts.select == ["balance", "red"] and opts.checks.balance.min_images == 7
        assert isinstance(opts.checks.red, RedOptions) and opts.checks.red.min_share == 0.8
        dumped = new.dump()["stages"]["audit"]["checks"]
        assert dumped["red"] == {"min_share": 0.8} and dumped["clarity"]["size"] == 128  # defaults filled in
        with pytest.raises(RecipeError, match=r"stages.audit.checks.red.min_shar: unknown key; allowed keys: min_share"):
            parse_recipe({"name": "x", "stages": {"audit": {"checks": {"red": {"min_shar": 1}}}}}, stages)
        # a recipe of the previous version: checks as a list, built-in options at the top, plugin_options
        old = parse_recipe({"name": "x", "stages": {"audit": {
            "checks": ["balance", "red"], "balance": {"min_images": 7}, "plugin_options": {"red": {"min_share": 0.8}}}}},
            stages)
        assert old.dump()["stages"]["audit"] == new.dump()["stages"]["audit"]
        # what `recipes show` printed for the audit before: checks null, every built-in's options, plugin_options
        default = parse_recipe({"name": "x", "stages": {"audit": {}}}, stages).dump()["stages"]["audit"]
        shown = {"checks": None, "workers": None, "max_side": 128, "chunk_size": None, "coverage_gap_share": 0.05,
                 **{k: v for k, v in default["checks"].items() if k != "red"}, "plugin_options": {}}
        assert parse_recipe({"name": "x", "stages": {"audit": shown}}, stages).dump()["stages"]["audit"] == default
        # the same check's options both ways: one sentence naming the new key
        for both in ({"balance": {"min_images": 7}, "checks": {"balance": {"min_images": 8}}},
                     {"plugin_options": {"red": {}}, "checks": {"red": {"min_share": 0.1}}}):
            with pytest.raises(RecipeError, match=r"stages.audit: the options of check '(balance|red)' are given twice; "
                                                  r"keep them under checks.(balance|red) only"):
                parse_recipe({"name": "x", "stages": {"audit": both}}, stages)
        with pytest.raises(RecipeError, match=r"old form of select\) and select is given too"):
            parse_recipe({"name": "x", "stages": {"audit": {"checks": ["balance"], "select": ["red"]}}}, stages)
    finally:
        pm.unregister(plugin)


def test_old_audit_keys_through_recipes_validate(tmp_path):
    from conftest import run_cli

    old = tmp_path / "old.yaml"
    old.write_text("name: old\nstages:\n  audit:\n    checks: [balance, duplicates]\n"
                   "    duplicates: {radius: 2}\n    balance: {min_images: 50}\n")
    res = run_cli("show", str(old))
    assert res.returncode == 0, res.stderr
    assert "    select:\n    - balance\n    - duplicates\n" in res.stdout and "      radius: 2\n" in res.stdout
    both = tmp_path / "both.yaml"
    both.write_text("name: both\nstages:\n  audit:\n    duplicates: {radius: 2}\n    checks: {duplicates: {radius: 3}}\n")
    res = run_cli("validate", str(both))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stages.audit: the options of check 'duplicates' are given twice; keep them under " \
        "checks.duplicates only" in lines[0], res.stderr


def test_report_sections_render_from_the_block(digits_run):
    from vetset.core.report_kit import ReportContext
    from vetset.plugins.audit.checks.balance import render_balance
    from vetset.plugins.audit.checks.coverage import render_coverage
    from vetset.plugins.audit.checks.quality import render_quality
    from vetset.plugins.audit.checks.unreadable import render_unreadable

    result = digits_run.result
    ctx = ReportContext(result=result, dataset=digits_run.dataset, max_thumbnails=4)
    balance = render_balance(result, ctx)
    assert "minimum 200 (train)" in balance and 'data-key="audit.metrics.classes_below_min"' in balance
    assert "Below the minimum of 200 train images: 8 (139)" in balance  # smallest class first
    coverage = render_coverage(result, ctx)
    assert coverage.count('<div class="plot">') == 3 and '"heatmap"' in coverage and "No coverage gap" in coverage
    quality = render_quality(result, ctx)
    assert 'data-key="audit.metrics.tiny"' in quality and "Showing 4 of 1,797" in quality
    assert "audit/tiny" in quality and quality.count("data:image/jpeg;base64,") >= 4
    assert "1,797 images are smaller than 128 px and were upscaled to measure their sharpness" in quality
    assert "Every file decoded." in render_unreadable(result, ctx)
    empty = {"stages": {"train": {}}}
    assert all(f(empty, ctx) is None for f in (render_balance, render_coverage, render_quality, render_unreadable))


def test_metadata_mime_type_without_a_decode_in_the_process():
    """A driver that reused every image-pass record decoded nothing, so Pillow had not loaded
    its format plugins (which fill ``Image.MIME``): the stored ``metadata.mime_type`` was
    None, and every later run that decoded a file rewrote every sample to set it back."""
    import subprocess
    import sys

    code = ("from vetset.plugins.audit.stage import _metadata\n"
            "print(_metadata(32, 32, 1000, 'RGB', 'JPEG')['mime_type'], _metadata(8, 8, 90, 'P', 'GIF')['mime_type'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["image/jpeg", "image/gif"]
