"""The main job end to end through the console script: `recipes run full`."""

from __future__ import annotations

import pytest
from conftest import run_cli
from test_dataset import tree_digest

from vetset.core.result import read_result

pytestmark = pytest.mark.slow


def _check_full_run(res, out, name, n_samples_min):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    result = read_result(out)
    assert list(result["stages"]) == ["audit", "augment", "drift", "train", "embed", "validate", "report"]
    assert result["stages"]["validate"]["slices"]["num_samples"] > 0 and "max_tvd" in result["stages"]["drift"]["metrics"]
    # where things are, printed for the user
    assert f"dataset: {name}" in res.stdout
    assert str(out / "result.json") in res.stdout
    assert "checkpoint" in res.stdout and "report html" in res.stdout
    # the closing summary names the worst failure slice and the drift verdict (tags of embed, which runs first, included)
    worst = result["stages"]["validate"]["slices"]["worst"]
    if worst:
        assert f"worst val slice: {worst['label']}: {worst['errors']} of {worst['n']} wrong" in res.stdout
    assert "\ndrift: " in res.stdout
    if result["stages"]["embed"]["outliers"]["count"]:
        props = {p["name"]: p for p in result["stages"]["validate"]["slices"]["properties"]}
        assert "outlier" in props["tag"]["bins"]
    import fiftyone as fo

    ds = fo.load_dataset(name)
    assert len(ds) >= n_samples_min
    assert "validation_errors" in ds.list_saved_views()
    errors = ds.load_saved_view("validation_errors")
    val = ds.match_tags("val").match_tags("unreadable", bool=False)
    acc = result["stages"]["validate"]["val"]["accuracy"]
    assert len(errors) == round((1 - acc) * len(val))
    embed = result["stages"]["embed"]  # no cached pretrained weights here: this run's checkpoint
    assert embed["skipped"] is None and embed["backbone"]["source"] == "checkpoint", embed.get("skipped")
    assert {"embed/duplicates", "embed/outliers"} <= set(ds.list_saved_views())
    assert "vetset_similarity" in ds.list_brain_runs()
    return result


def test_full_recipe_on_demo_digits(digits_dir, tmp_path):
    before = tree_digest(digits_dir)
    out = tmp_path / "out"
    res = run_cli("run", "full", "--data", str(digits_dir), "--dataset", "t-main-digits", "--out", str(out))
    result = _check_full_run(res, out, "t-main-digits", 1797)
    assert result["stages"]["validate"]["val"]["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert tree_digest(digits_dir) == before


def test_full_recipe_on_ants_and_bees_photos(hymenoptera_dir, tmp_path):
    before = tree_digest(hymenoptera_dir)
    out = tmp_path / "out"
    res = run_cli("run", "full", "--data", str(hymenoptera_dir), "--dataset", "t-main-hym", "--out", str(out))
    result = _check_full_run(res, out, "t-main-hym", 398)
    assert result["stages"]["audit"]["num_images"] >= 398
    assert tree_digest(hymenoptera_dir) == before
