"""Slice properties from other stages and derived ones, and failure slices on the test split.

One real run on CIFAR photos with planted near duplicates of train images (val and test) and
planted digits among the val cats: audit -> augment -> train -> embed -> drift -> validate.
"""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = ["cat", "ship"]


def drop(name: str) -> None:
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="module")
def leaky(cifar_test_dir, digits_dir, tmp_path_factory):
    from slices_data import write_leaky

    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    name = "t-slice-props"
    drop(name)
    info = write_leaky(cifar_test_dir, digits_dir, tmp_path_factory.mktemp("leaky") / "data")
    hooks = Hooks()
    train = {"model_name": "test_resnet", "img_size": 32, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0,
             "epochs": 2, "threads": 1, "workers": 0}
    recipe = parse_recipe({"name": "t", "stages": {
        "audit": {"workers": 0}, "augment": {"min_count": 60, "coverage_targets": {}, "workers": 0},
        "train": train, "embed": {"pretrained": False, "similarity_index": False, "visualization": False},
        "drift": {}, "validate": {"workers": 0, "brain": False, "slices": {"min_support": 4, "views": 30}},
        "report": {}}}, hooks.stages)
    logs: list[str] = []
    run = Run(recipe, hooks, data=info["root"], dataset=name, out_dir=tmp_path_factory.mktemp("leaky-out"),
              log=logs.append)
    result = run.execute()
    return run, result, info, logs


def _expected_in_train_groups(ds, split: str, train_filter=None) -> set[str]:
    """Filepaths of ``split`` samples sharing a duplicate_group / embed_group with a (filtered) train original."""
    train = ds.match_tags("train").match_tags("augmented", bool=False)
    fps = train.values("filepath")
    out = set()
    for f in ("duplicate_group", "embed_group"):
        if f not in ds.get_field_schema():
            continue
        groups = {g for fp, g in zip(fps, train.values(f)) if g and (train_filter is None or fp in train_filter)}
        view = ds.match_tags(split)
        out |= {fp for fp, g in zip(view.values("filepath"), view.values(f)) if g in groups}
    return out


def test_near_duplicate_of_train_slice(leaky):
    from fiftyone import ViewField as F

    from vetset.plugins.validate.properties import match_bin, properties_from_result

    run, result, info, _ = leaky
    ds = run.dataset
    sl = result["stages"]["validate"]["slices"]
    props = properties_from_result(ds, sl["properties"])
    assert "near_duplicate_of_train" in props and props["near_duplicate_of_train"].kind == "derived"
    # every planted val copy of a train photo is found (the audit's pHash groups them), and the
    # property holds exactly the val samples that share a group with a train original
    expected = _expected_in_train_groups(ds, "val")
    planted = {c for c in info["copies"] if "/val/" in c}
    assert planted <= expected
    inside = match_bin(ds.match_tags("val"), props["near_duplicate_of_train"], "true")
    assert set(inside.values("filepath")) == expected
    row = next(r for r in sl["across_classes"] if (r["property"], r["bin"]) == ("near_duplicate_of_train", "true"))
    assert row["n"] == len(expected)
    assert row["errors"] == len(inside.match(F("predictions.label") != F("ground_truth.label")))
    ship = next(r for r in sl["by_class"] if (r["class"], r["property"], r["bin"]) ==
                ("ship", "near_duplicate_of_train", "true"))
    assert ship["n"] == len([p for p in expected if "/ship/" in p]) and ship["rest_n"] == 25 + 8 - ship["n"]


def test_augmented_source_slice(leaky):
    from vetset.plugins.validate.properties import match_bin, properties_from_result

    run, result, _, _ = leaky
    ds = run.dataset
    sources = set(ds.match_tags("augmented").values("source_filepath"))
    assert len(sources) >= 20  # min_count 60 lifted both classes from 40 train photos
    expected = _expected_in_train_groups(ds, "val", sources)
    props = properties_from_result(ds, result["stages"]["validate"]["slices"]["properties"])
    if not expected:
        assert "augmented_source" not in props
        pytest.skip("no planted copy's train photo was drawn as an augmentation source")
    inside = match_bin(ds.match_tags("val"), props["augmented_source"], "true")
    assert set(inside.values("filepath")) == expected
    assert expected <= _expected_in_train_groups(ds, "val")  # a sub-slice of the near duplicates


def test_embed_tags_are_slices_and_drift_rows(leaky):
    from vetset.plugins.validate.properties import match_bin, properties_from_result

    run, result, info, _ = leaky
    ds = run.dataset
    embed = result["stages"]["embed"]
    assert embed["skipped"] is None and embed["backbone"]["source"] == "checkpoint"
    sl = result["stages"]["validate"]["slices"]
    props = properties_from_result(ds, sl["properties"])
    flagged = ds.match_tags("outlier")
    assert len(flagged) == embed["outliers"]["count"] > 0
    assert "outlier" in props["tag"].bins
    val_out = match_bin(ds.match_tags("val"), props["tag"], "outlier")
    assert len(val_out) == len(ds.match_tags("val").match_tags("outlier"))
    rows = [r for r in sl["by_class"] + sl["across_classes"] if r["property"] == "tag" and r["bin"] == "outlier"]
    for r in rows:
        view = val_out if r["class"] is None else val_out.match({"ground_truth.label": r["class"]})
        assert r["n"] == len(view)
    drift = result["stages"]["drift"]
    assert any(r["property"] == "tag outlier" for r in drift["rows"])  # the tag's share, train vs val
    assert not any(r["property"] in ("near_duplicate_of_train", "augmented_source") for r in drift["rows"])


def test_slices_on_the_test_split(leaky):
    from fiftyone import ViewField as F

    from vetset.plugins.validate.properties import match_bin, properties_from_result

    run, result, info, logs = leaky
    ds = run.dataset
    block = result["stages"]["validate"]
    ts = block["test_slices"]
    assert ts["split"] == "test" and ts["num_samples"] == 2 * 20 + 4
    test = ds.match_tags("test")
    props = properties_from_result(ds, ts["properties"])
    expected = _expected_in_train_groups(ds, "test")
    assert {c for c in info["copies"] if "/test/" in c} <= expected
    viewed = [r for r in ts["by_class"] + ts["across_classes"] if r.get("view")]
    for r in ts["by_class"][:5] + ts["across_classes"][:3] + viewed:
        view = test if r["class"] is None else test.match(F("ground_truth.label") == r["class"])
        inside = match_bin(view, props[r["property"]], r["bin"])
        assert len(inside) == r["n"]
        assert len(inside.match(F("predictions.label") != F("ground_truth.label"))) == r["errors"]
    assert viewed and all(r["view"].startswith("test_errors/slice/") for r in viewed)
    for r in viewed:
        saved = ds.load_saved_view(r["view"])
        assert len(saved) == r["errors"] and set(saved.values("tags")[0]) >= {"test"}
    # the val slices' views are untouched by the test split's
    assert any(v.startswith("validation_errors/slice/") for v in ds.list_saved_views())
    m = block["metrics"]
    assert m["test_worst_slice_error_rate"] == (ts["worst"]["error_rate"] if ts["worst"] else None)
    assert m["test_slices_clearly_worse"] >= sum(r["clear"] for r in ts["by_class"] + ts["across_classes"])
    assert any(x.startswith("[validate] worst test slice: ") for x in logs)
    errs = np.array([p != g for p, g in zip(*test.values(["predictions.label", "ground_truth.label"]))])
    assert block["test"]["accuracy"] == pytest.approx(1 - errs.mean(), abs=1e-4)


def test_test_slices_in_result_report_console_and_panel(leaky, capsys):
    from test_app_operators import _props, make_ctx

    from vetset.core.result_schema import validate_result
    from vetset.plugins.fiftyone_app.panel import AuditPanel
    from vetset.plugins.report.console import diagnosis_lines
    from vetset.recipes.cli import _print_summary

    run, result, _, _ = leaky
    validate_result(result)
    from vetset.core.result import read_result

    assert read_result(run.out_dir)["stages"]["validate"]["test_slices"] == result["stages"]["validate"]["test_slices"]
    ts, sl = result["stages"]["validate"]["test_slices"], result["stages"]["validate"]["slices"]
    # console: the worst val and test slices, the drift verdicts, at the end of `recipes run`
    lines = diagnosis_lines(result)
    assert lines[0].startswith(f"worst val slice: {sl['worst']['label']}: {sl['worst']['errors']} of {sl['worst']['n']}")
    assert lines[1].startswith(f"worst test slice: {ts['worst']['label']}: {ts['worst']['errors']} of {ts['worst']['n']}")
    assert any(x.startswith("drift: ") for x in lines)
    _print_summary(result)
    printed = capsys.readouterr().out
    assert "worst test slice: " in printed and "done in " in printed
    # report: the test split's table under the failure slices
    html = (run.out_dir / "report.html").read_text(encoding="utf-8")
    section = html.split('id="sec-failure_slices"', 1)[1]
    assert "<h3>Test split</h3>" in section and "test samples" in section
    assert ts["by_class"][0]["label"].split(",")[0] in section.split("<h3>Test split</h3>", 1)[1]
    # App panel: a table of the test split's slices whose Open loads the slice's saved view
    panel = AuditPanel()
    ctx = make_ctx(run.dataset, panel_state={})
    panel.on_load(ctx)
    rows = ctx.panel_state["test_slices"]
    assert rows[0]["slice"] == ts["by_class"][0]["label"] and "test_slices" in _props(panel.render(ctx))
    i = next(i for i, r in enumerate(rows) if r["view"])
    ctx = make_ctx(run.dataset, {"row": i}, panel_state=ctx.panel_state)
    panel.open_test_slice(ctx)
    ctx.ops.set_view.assert_called_once_with(name=rows[i]["view"])
    assert rows[i]["view"].startswith("test_errors/slice/")
