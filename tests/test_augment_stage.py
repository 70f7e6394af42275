"""The augment stage end to end on real photos (hymenoptera subset) and the digits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from test_dataset import tree_digest

from vetset.core.errors import DataError, RecipeError
from vetset.core.recipe import parse_recipe
from vetset.core.run import Run

TARGETS = {"orientation": {"portrait": 0.3}, "colour": {"grayscale": 0.15}, "clarity": {"blurry": 0.15}}


@pytest.fixture
def ds_name(fresh_name):
    """A dataset name no other test session uses (FiftyOne processes on one machine may share
    one database service), deleted after the test."""
    import uuid

    import fiftyone as fo

    name = f"{fresh_name[:50]}-{uuid.uuid4().hex[:8]}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="module")
def hym_subset(hymenoptera_dir, tmp_path_factory) -> Path:
    """20 train and 6 val photos per class, copied (the real files, sizes and EXIF tags)."""
    root = tmp_path_factory.mktemp("hym-subset") / "hym"
    for split, n in (("train", 20), ("val", 6)):
        for cls in ("ants", "bees"):
            files = sorted((hymenoptera_dir / split / cls).glob("*.jp*g"))[:n]
            (root / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy2(f, root / split / cls / f.name)
    return root


def make_run(hooks, data, out, name, augment, audit=True):
    stages = {"audit": {}} if audit else {}
    stages["augment"] = augment
    recipe = parse_recipe({"name": "t", "stages": stages}, hooks.stages, source="t.yaml")
    return Run(recipe, hooks, data=data, dataset=name, out_dir=out, log=lambda m: None)


def files_under(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".vetset-augment"}


def dataset_shares(ds, label: str, field: str, value: str) -> tuple[int, int]:
    """(count in bin, readable train total) of one class, read back from FiftyOne."""
    from vetset.core.dataset import split_view

    view = split_view(ds, "train").match(__import__("fiftyone").ViewField("ground_truth.label") == label)
    values = view.values(field)
    return sum(v == value for v in values), sum(v is not None for v in values)


def test_gaps_are_closed_idempotently_without_touching_sources(hooks, hym_subset, tmp_path, ds_name):
    import fiftyone as fo

    before_tree = tree_digest(hym_subset)
    out = tmp_path / "out"
    augment = {"min_count": 30, "coverage_targets": TARGETS, "workers": 2}
    run = make_run(hooks, hym_subset, out, ds_name, augment)
    from vetset.core.progress import listen

    seen = []
    with listen(lambda desc, done, total: seen.append((desc, done, total)), min_interval_s=0):
        result = run.execute()["stages"]["augment"]
    ds = run.dataset
    # every loop's progress reaches its total (the writer's consumer stops at the last item)
    last = {desc: (done, total) for desc, done, total in seen}
    assert last["augment"] == (result["plan"]["images"], result["plan"]["images"]) and \
        all(done == total for done, total in last.values()), last
    folder = out / "augment" / "images"
    assert result["output_dir"] == str(folder)
    assert result["write"]["workers"] == 2 and result["write"]["failed"] == 0

    # every planned cell reached its target, and FiftyOne agrees with the result
    assert result["metrics"]["cells_below_target"] == 0 and result["metrics"]["cells_planned"] == 6
    fields = {"orientation": "orientation", "colour": "colour_mode", "clarity": "clarity"}
    for cell in result["cells"]:
        assert cell["status"] == "planned" and cell["reached"] is True
        assert cell["before_share"] < cell["target_share"] <= cell["after_share"]
        count, total = dataset_shares(ds, cell["label"], fields[cell["property"]], cell["bin"])
        assert (count, total) == (cell["after_count"], cell["after_total"])
    for policy, landed in result["landed"].items():  # each policy moved the property it targets
        assert landed["landed"] == landed["targeted"] > 0, policy
    for klass in result["plan"]["classes"]:
        assert result["after"]["class_counts"][klass["label"]] >= 30

    # new samples: train only, tagged, with their source and applied parameters
    aug = ds.match_tags("augmented")
    n_aug = len(aug)
    assert n_aug == result["plan"]["images"] == result["write"]["written"] > 0
    assert set(aug.distinct("tags")) <= {"train", "augmented", "blurry", "odd_aspect_ratio", "exif_rotated"}
    assert len(aug.match_tags(["val", "test"])) == 0
    train_ids = set(ds.match_tags("train").match_tags("augmented", bool=False).values("id"))
    policies, params, sources, fps = aug.values(["aug_policy", "aug_params", "source_id", "filepath"])
    assert set(sources) <= train_ids
    first_step = {"orientation": "Transpose", "colour": None, "clarity": "AtWorkingSize", "light": None}
    for policy, applied in zip(policies, params):
        assert applied and all(set(p) == {"transform", "params"} for p in applied)
        if first_step.get(policy):
            assert applied[0]["transform"] == first_step[policy]
        if policy == "colour":
            assert applied[-1]["transform"] == "ToGray"
    assert all(fp.startswith(str(folder) + os.sep) for fp in fps)
    files = files_under(folder)
    assert sorted(files) == sorted(fps)
    assert len(ds.match_tags("val")) == 12 and "augmented" in ds.list_saved_views()

    # the report section shows before and after for every cell
    from vetset.core.report_kit import ReportContext
    from vetset.plugins.augment.report import render_section

    html = render_section(run.result, ReportContext(result=run.result, dataset=ds))
    assert html.count(">reached<") == 6 and "Coverage before and after" in html and "<img" in html

    # rerun: nothing written, nothing added, same files
    run2 = make_run(hooks, hym_subset, out, ds_name, augment)
    again = run2.execute()["stages"]["augment"]
    assert again["plan_key"] == result["plan_key"]
    assert again["write"]["skipped"] == again["plan"]["images"] and again["write"]["written"] == 0
    assert len(fo.load_dataset(ds_name).match_tags("augmented")) == n_aug
    assert files_under(folder) == files

    # a changed plan replaces the earlier augmented set
    run3 = make_run(hooks, hym_subset, out, ds_name, {**augment, "coverage_targets": {"clarity": {"blurry": 0.2}}})
    changed = run3.execute()["stages"]["augment"]
    assert changed["plan_key"] != result["plan_key"]
    assert changed["write"]["deleted_samples"] == n_aug
    ds3 = fo.load_dataset(ds_name)
    aug3 = ds3.match_tags("augmented")
    assert len(aug3) == changed["plan"]["images"] and set(aug3.distinct("aug_plan")) == {changed["plan_key"]}
    assert sorted(files_under(folder)) == sorted(aug3.values("filepath"))
    assert tree_digest(hym_subset) == before_tree


def test_bad_pipelines_fail_before_anything_is_written(hooks, hym_subset, tmp_path, ds_name):
    import fiftyone as fo

    bad_param = {"__class_fullname__": "Compose", "transforms": [
        {"__class_fullname__": "GaussianBlur", "sigma_limit": "strong", "p": 1.0}]}
    cases = [
        ({"pipeline": bad_param, "targets": ["clarity.blurry"]},
         r"t.yaml: stages.augment.policies.mine.pipeline: transform GaussianBlur .*rejected its parameters: sigma_limit"),
        ({"pipeline": {"__class_fullname__": "MotionBlurr", "p": 1.0}},
         r"unknown transform 'MotionBlurr'; did you mean MotionBlur"),
        ({"pipeline": {"__class_fullname__": "Normalize", "p": 1.0}, "targets": ["clarity.blurry"]},
         r"policy 'mine'.* returned a float32 .*uint8"),
    ]
    for i, (policy, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        run = make_run(hooks, hym_subset, out, ds_name, {"min_count": 0, "coverage_targets": {"clarity": {"blurry": 0.1}},
                                                             "policies": {"mine": policy}}, audit=i == 0)
        with pytest.raises(RecipeError, match=message):
            run.execute()
        assert not any((out / "augment").rglob("*.jp*g"))
        assert len(fo.load_dataset(ds_name).match_tags("augmented")) == 0


def test_output_folder_must_not_overlap_the_data(hooks, hym_subset, tmp_path, ds_name):
    before = tree_digest(hym_subset)
    for folder, message in ((hym_subset / "train" / "aug", "overlaps the source data"),
                            (hym_subset.parent, "overlaps the source data")):
        run = make_run(hooks, hym_subset, tmp_path / "o", ds_name, {"output_dir": str(folder), "min_count": 25})
        with pytest.raises(DataError, match=message):
            run.execute()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    run = make_run(hooks, hym_subset, tmp_path / "o", ds_name, {"output_dir": str(busy), "min_count": 25}, audit=False)
    with pytest.raises(DataError, match="not empty and was not created by vetset"):
        run.execute()
    assert (busy / "notes.txt").read_text() == "mine" and tree_digest(hym_subset) == before


def test_an_interrupted_run_leaves_whole_samples_and_the_rerun_completes(hooks, hym_subset, tmp_path, ds_name,
                                                                         monkeypatch):
    import vetset.plugins.augment.writer as aw

    real = aw.run_tasks

    def interrupted(tasks, cfg, workers, progress=None):
        for k, pair in enumerate(real(tasks, cfg, workers, progress)):
            if k == 9:
                raise KeyboardInterrupt
            yield pair

    augment = {"min_count": 28, "coverage_targets": {"colour": {"grayscale": 0.2}}}
    monkeypatch.setattr(aw, "run_tasks", interrupted)
    run = make_run(hooks, hym_subset, tmp_path / "out", ds_name, augment)
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    folder = tmp_path / "out" / "augment" / "images"
    aug = run.dataset.match_tags("augmented")
    assert len(aug) == 9  # every finished image became a whole sample, nothing more
    for fp, params, policy in zip(*aug.values(["filepath", "aug_params", "aug_policy"])):
        assert Path(fp).is_file() and params and policy
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name]

    monkeypatch.setattr(aw, "run_tasks", real)
    done = make_run(hooks, hym_subset, tmp_path / "out", ds_name, augment).execute()["stages"]["augment"]
    assert done["write"]["skipped"] == 9
    # the 10th file was renamed into place just before the interrupt: kept, its sample added now
    assert done["write"]["recovered"] == 1
    assert done["write"]["written"] == done["plan"]["images"] - 10
    assert len(run.dataset.match_tags("augmented")) == done["plan"]["images"]
    assert done["metrics"]["cells_below_target"] == 0


def test_digits_lift_small_classes_and_report_impossible_cells(hooks, digits_dir, tmp_path, ds_name):
    before = tree_digest(digits_dir)
    augment = {"min_count": 150, "coverage_targets": {"orientation": {"portrait": 0.1}}}
    run = make_run(hooks, digits_dir, tmp_path / "out", ds_name, augment)
    result = run.execute()["stages"]["augment"]
    counts = result["before"]["class_counts"]
    assert len(counts) == 10 and min(counts.values()) < 150
    for klass in result["plan"]["classes"]:  # the light policy fills every class up to 150
        assert klass["planned"] == max(0, 150 - klass["before"]) == klass["by_policy"].get("light", 0)
        assert result["after"]["class_counts"][klass["label"]] == max(150, klass["before"])
    # 8x8 digits are all square: a quarter turn cannot make them portrait
    assert result["metrics"]["cells_infeasible"] == 10
    assert all("landscape" in c["reason"] for c in result["cells"])
    ds = run.dataset
    assert len(ds.match_tags("val").match_tags("augmented")) == 0
    assert ds.match_tags("augmented").first().filepath.endswith(".png")
    assert tree_digest(digits_dir) == before


def test_recipes_plan_prints_the_plan_and_writes_no_image(hym_subset, tmp_path, ds_name):
    recipe = tmp_path / "plan.yaml"
    recipe.write_text("name: plan\nstages:\n  audit: {}\n  augment:\n    min_count: 30\n"
                      "    coverage_targets: {orientation: {portrait: 0.3}}\n")
    out = tmp_path / "out"
    res = run_cli("plan", str(recipe), "--data", str(hym_subset), "--dataset", ds_name, "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Class counts (train)" in res.stdout and "Coverage cells (train)" in res.stdout
    assert "orientation=portrait" in res.stdout and "30.0%" in res.stdout
    assert "new train images would be written to" in res.stdout
    assert not (out / "augment").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstages:\n  augment:\n    coverage_targets: {colour: {greyscale: 0.1}}\n")
    res = run_cli("plan", str(bad), "--data", str(hym_subset), "--dataset", ds_name)
    assert res.returncode == 2 and "colour.greyscale is not a bin" in res.stderr and "Traceback" not in res.stderr


def test_a_recipe_policy_from_a_saved_file_and_a_plugin_policy(hym_subset, tmp_path, ds_name):
    """A pipeline file ``A.save`` wrote fills a cell; a plugin's policy, whose transform only the
    plugin's ``vetset_register_transforms`` names (``acme.Invert``), lifts the class counts."""
    import albumentations as A
    from test_augment_pipeline import AcmePlugin, Invert

    from vetset.core.manager import Hooks, build_plugin_manager

    path = tmp_path / "negative_gray.json"
    A.save(A.Compose([Invert(p=1.0), A.ToGray(p=1.0)]), str(path))
    pm = build_plugin_manager()
    plugin = AcmePlugin()
    pm.register(plugin, name="acme")
    try:
        hooks = Hooks(pm)
        augment = {"min_count": 25, "fill_policy": "acme_invert", "coverage_targets": {"colour": {"grayscale": 0.2}},
                   "policies": {"negative_gray": {"pipeline": str(path), "targets": ["colour.grayscale"]}}}
        run = make_run(hooks, hym_subset, tmp_path / "out", ds_name, augment)
        result = run.execute()["stages"]["augment"]
    finally:
        pm.unregister(plugin)
    assert result["policies"]["negative_gray"]["plugin"] == "recipe"
    assert result["policies"]["acme_invert"]["plugin"] == "acme"
    by_policy = result["plan"]["by_policy"]
    assert set(by_policy) == {"negative_gray", "acme_invert"} and min(by_policy.values()) > 0
    assert result["landed"]["negative_gray"]["landed"] == result["landed"]["negative_gray"]["targeted"]
    assert result["metrics"]["cells_below_target"] == 0 and result["metrics"]["classes_below_min_after"] == 0
    expected = {"negative_gray": ["Invert", "ToGray"], "acme_invert": ["Invert"]}
    for policy, applied in zip(*run.dataset.match_tags("augmented").values(["aug_policy", "aug_params"])):
        assert [p["transform"] for p in applied] == expected[policy]


def test_a_narrowed_audit_still_gives_the_plan_its_sources(hooks, hym_subset, tmp_path, ds_name):
    """audit: {checks: [balance]} leaves the coverage bins unwritten; the augment stage runs them itself."""
    from vetset.core.dataset import training_view

    stages = {"audit": {"checks": ["balance"], "workers": 0}, "augment": {"min_count": 24, "coverage_targets": {}, "workers": 0}}
    recipe = parse_recipe({"name": "t", "stages": stages}, hooks.stages, source="t.yaml")
    logs = []
    run = Run(recipe, hooks, data=hym_subset, dataset=ds_name, out_dir=tmp_path / "o1", log=logs.append)
    run.execute()
    block = run.results["augment"]
    assert any("the audit stage did not run orientation, colour, clarity" in m for m in logs), logs
    assert block["write"]["written"] == 8 and block["metrics"]["classes_below_min_after"] == 0  # 20 -> 24 per class
    # a second run into another folder plans from the originals again and trains on its own set only
    run2 = Run(recipe, hooks, data=hym_subset, dataset=ds_name, out_dir=tmp_path / "o2", log=lambda m: None)
    run2.execute()
    assert run2.results["augment"]["write"]["written"] == 8
    view, left_out = training_view(run2.dataset)
    assert (len(view), left_out) == (48, 8)
