"""Failure slices and train/validation drift: formulas, the planted case on CIFAR, the stages on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vetset.plugins.validate.drift import compare_counts
from vetset.plugins.validate.properties import Property
from vetset.plugins.validate.slices import newcombe, rank_slices, wilson


def drop(name: str) -> None:
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def wilson_closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927), eq. as in Agresti & Coull (1998), eq. 2."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 10), (10, 11), (13, 24), (56, 156), (20, 20)])
def test_wilson_interval_matches_the_closed_form(k, n):
    lo, hi = wilson(k, n)
    elo, ehi = wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0.0, elo), abs=1e-9) and hi == pytest.approx(min(1.0, ehi), abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_ranking_uses_support_and_the_rest_of_the_class():
    # class a: 30 samples; bin x holds 12 with 9 errors, bin y 18 with 2; class b: 20 samples, bin x 4 with 4 errors
    prop = Property("p", "categorical", ["x", "y"])
    gt = ["a"] * 30 + ["b"] * 20
    in_x = np.array([True] * 12 + [False] * 18 + [True] * 4 + [False] * 16)
    wrong = np.zeros(50, bool)
    wrong[:9] = True
    wrong[12:14] = True
    wrong[30:34] = True
    member = np.stack([in_x, ~in_x], axis=1)
    ranked = rank_slices(gt, wrong, [(prop, member)], ["a", "b"], min_support=10)
    first = ranked["by_class"][0]
    assert (first["class"], first["bin"], first["n"], first["errors"]) == ("a", "x", 12, 9)
    assert first["rest_n"] == 18 and first["rest_errors"] == 2
    assert first["excess"] == pytest.approx(9 / 12 - 2 / 18, abs=1e-4)
    lo, hi = newcombe_closed_form(9, 12, 2, 18)
    assert first["excess_ci"] == pytest.approx([lo, hi], abs=1e-4) and first["score"] == first["excess_ci"][0]
    assert first["score"] == pytest.approx(0.2829, abs=1e-4) and first["clear"]
    # b x has 4 samples, and b y's rest is those 4 (< min_support): counted, not ranked
    assert all(r["class"] != "b" for r in ranked["by_class"]) and ranked["candidates"] == 6
    assert ranked["not_ranked"] == {"small_slice": 1, "small_rest": 1}
    across = {(r["bin"]): r for r in ranked["across_classes"]}
    assert across["x"]["n"] == 16 and across["x"]["errors"] == 13 and across["x"]["rest_n"] == 34


def newcombe_closed_form(k1: int, n1: int, k2: int, n2: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Newcombe (1998), method 10, from the closed-form Wilson limits above."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_closed_form(k1, n1, z), wilson_closed_form(k2, n2, z)
    return p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def test_newcombe_interval_matches_the_published_example_and_the_closed_form():
    # Newcombe (1998), Table II, example (a): 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    lo, hi = newcombe(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    for args in [(9, 12, 2, 18), (10, 20, 7, 40), (0, 10, 5, 10), (11, 11, 0, 25), (3, 50, 40, 41)]:
        assert newcombe(*args) == pytest.approx(newcombe_closed_form(*args), abs=1e-9)
    assert newcombe(0, 10, 10, 10)[0] == pytest.approx(-1.0) and newcombe(10, 10, 0, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n2=0"):
        newcombe(1, 5, 0, 0)


def test_a_slice_with_a_tiny_rest_does_not_outrank_a_clearly_worse_slice():
    # class a: bin x holds 39 of its 40 samples (20 errors), its rest 1 sample (no error);
    # class b: bin x holds 15 of 40 (10 errors), its rest 25 (4 errors)
    prop = Property("p", "categorical", ["x", "y"])
    gt = ["a"] * 40 + ["b"] * 40
    in_x = np.array([True] * 39 + [False] + [True] * 15 + [False] * 25)
    wrong = np.zeros(80, bool)
    wrong[:20] = True
    wrong[40:50] = True
    wrong[55:59] = True
    member = np.stack([in_x, ~in_x], axis=1)
    # the Wilson-lower-bound-minus-rest-rate score put "a, x" first: 0.36 against 0.26
    assert wilson(20, 39)[0] - 0 / 1 > wilson(10, 15)[0] - 4 / 25 + 0.1
    ranked = rank_slices(gt, wrong, [(prop, member)], ["a", "b"], min_support=10)
    first = ranked["by_class"][0]
    assert (first["class"], first["bin"], first["n"], first["errors"], first["rest_n"], first["rest_errors"]) == \
        ("b", "x", 15, 10, 25, 4)
    assert first["score"] == pytest.approx(newcombe_closed_form(10, 15, 4, 25)[0], abs=1e-4) and first["clear"]
    assert first["score"] == pytest.approx(0.1951, abs=1e-4)
    assert all(r["class"] != "a" for r in ranked["by_class"])  # a x: a rest of 1; a y: 1 sample
    assert ranked["not_ranked"] == {"small_slice": 1, "small_rest": 1}
    # without the rest's minimum support, its interval alone keeps it below: 0/1 is anything from 0 to 0.79
    ranked = rank_slices(gt, wrong, [(prop, member)], ["a", "b"], min_support=1)
    rows = {(r["class"], r["bin"]): r for r in ranked["by_class"]}
    assert ranked["by_class"][0] is rows[("b", "x")]
    assert rows[("a", "x")]["excess"] == pytest.approx(20 / 39, abs=1e-4)
    assert rows[("a", "x")]["score"] == pytest.approx(newcombe_closed_form(20, 39, 0, 1)[0], abs=1e-4)
    assert rows[("a", "x")]["score"] < 0 and not rows[("a", "x")]["clear"]


def _coverage_case(train_in_x: dict[str, int]):
    """One property p (bins x, y), classes a, b, c with 60 val samples each and 100 train images each,
    ``train_in_x[class]`` of them in bin x.

    val: a x 20 (14 wrong) / y 40 (8 wrong); b x 20 (9 wrong) / y 40 (9 wrong), the seed-1 counts of the
    planted benchmark; c x 20 (3 wrong) / y 40 (8 wrong).
    """
    prop = Property("p", "categorical", ["x", "y"])
    gt, in_x, wrong = [], [], []
    for cls, (kx, ky) in {"a": (14, 8), "b": (9, 9), "c": (3, 8)}.items():
        gt += [cls] * 60
        in_x += [True] * 20 + [False] * 40
        wrong += [i < kx for i in range(20)] + [i < ky for i in range(40)]
    in_x = np.array(in_x)
    tgt = [c for c in "abc" for _ in range(100)]
    tx = np.array([i < train_in_x[c] for c in "abc" for i in range(100)])
    member, tmember = np.stack([in_x, ~in_x], axis=1), np.stack([tx, ~tx], axis=1)
    return prop, gt, np.array(wrong), member, (tgt, [tmember])


def test_an_uncovered_worse_slice_outranks_a_covered_slice_with_a_higher_score():
    # b's train images lack bin x (2 of 100 < the audit's coverage_gap_share 0.05); a's and c's hold 30 and 0
    prop, gt, wrong, member, train = _coverage_case({"a": 30, "b": 2, "c": 0})
    ranked = rank_slices(gt, wrong, [(prop, member)], ["a", "b", "c"], min_support=10, train=train)
    rows = {(r["class"], r["bin"]): r for r in ranked["by_class"]}
    bx, ax, cx = rows[("b", "x")], rows[("a", "x")], rows[("c", "x")]
    # a x has the higher score, and it is clear; b x is not clear (its 95% interval crosses 0) ...
    assert ax["score"] == pytest.approx(newcombe_closed_form(14, 20, 8, 40)[0], abs=1e-4) and ax["clear"]
    assert bx["score"] == pytest.approx(-0.0185, abs=1e-4) and not bx["clear"] and ax["score"] > bx["score"]
    # ... but it is worse at one-sided 95% (low end of the 90% interval, z = 1.645) and uncovered
    assert newcombe_closed_form(9, 20, 9, 40, z=1.6448536269514722)[0] == pytest.approx(0.0179, abs=1e-4)
    assert bx["worse"] and (bx["train_n"], bx["train_share"], bx["uncovered"], bx["priority"]) == (2, 0.02, True, True)
    assert (ax["train_n"], ax["train_share"], ax["uncovered"], ax["priority"]) == (30, 0.3, False, False)
    assert ranked["by_class"][0] is bx and ranked["by_class"][1] is ax
    # c x: no train image in x, but not worse than the rest of c (3 of 20 against 8 of 40): no priority
    assert (cx["train_n"], cx["train_share"], cx["uncovered"], cx["worse"], cx["priority"]) == (0, 0.0, True, False, False)
    assert [r["score"] for r in ranked["by_class"][1:]] == sorted((r["score"] for r in ranked["by_class"][1:]),
                                                                   reverse=True)
    # the y bins hold the rest of each class's train images; across classes: x holds 32 of 300
    assert (rows[("b", "y")]["train_n"], rows[("b", "y")]["train_share"]) == (98, 0.98)
    across = {r["bin"]: r for r in ranked["across_classes"]}
    assert (across["x"]["train_n"], across["x"]["train_share"], across["x"]["uncovered"]) == (32, 0.1067, False)
    # the threshold is the option: under 0.01, b's 2% covers x and the order is by score again
    ranked = rank_slices(gt, wrong, [(prop, member)], ["a", "b", "c"], min_support=10, train=train, gap_share=0.01)
    assert ranked["by_class"][0]["class"] == "a" and not any(r["priority"] for r in ranked["by_class"])


def test_a_covered_everywhere_case_ranks_by_score_as_before():
    prop, gt, wrong, member, train = _coverage_case({"a": 30, "b": 25, "c": 40})
    covered = rank_slices(gt, wrong, [(prop, member)], ["a", "b", "c"], min_support=10, train=train)
    plain = rank_slices(gt, wrong, [(prop, member)], ["a", "b", "c"], min_support=10)
    assert [r["label"] for r in covered["by_class"]] == [r["label"] for r in plain["by_class"]]
    assert [r["score"] for r in covered["by_class"]] == sorted((r["score"] for r in covered["by_class"]), reverse=True)
    assert covered["by_class"][0]["label"] == "a, p = x"
    assert not any(r["uncovered"] or r["priority"] for r in covered["by_class"] + covered["across_classes"])
    assert {r["train_share"] for r in covered["by_class"] if r["bin"] == "x"} == {0.3, 0.25, 0.4}
    # without a train split there is no train share and no priority
    assert all(r["train_share"] is None and r["train_n"] is None and not r["priority"] for r in plain["by_class"])


def test_drift_statistics():
    same = compare_counts(np.array([90, 10]), np.array([45, 5]))
    assert same["tvd"] == 0.0 and same["p_value"] == pytest.approx(1.0)
    moved = compare_counts(np.array([150, 0]), np.array([40, 20]))
    assert moved["tvd"] == pytest.approx(1 / 3, abs=1e-4) and moved["test"] == "chi-square"
    from scipy.stats import chi2_contingency

    assert moved["p_value"] == pytest.approx(chi2_contingency([[150, 0], [40, 20]], correction=False).pvalue, rel=1e-2)
    small = compare_counts(np.array([30, 0]), np.array([8, 2]))
    assert small["test"] == "fisher"


# -- the planted case: real CIFAR photos, a real classifier --------------------------------------
@pytest.fixture(scope="module")
def planted(cifar_test_dir, tmp_path_factory):
    """Planted tree, audited; predictions of a logistic regression on 8x8 RGB thumbnails (fitted on train)."""
    import fiftyone as fo
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from slices_data import write_planted

    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    name = "t-diagnose-planted"
    drop(name)
    info = write_planted(cifar_test_dir, tmp_path_factory.mktemp("planted"))
    hooks = Hooks()
    recipe = parse_recipe({"name": "t", "stages": {"audit": {"workers": 0}, "drift": {}}}, hooks.stages)
    run = Run(recipe, hooks, data=info["root"], dataset=name, out_dir=tmp_path_factory.mktemp("planted-out"),
              log=lambda m: None)
    result = run.execute()
    ds = run.dataset

    def features(view):
        return np.array([np.asarray(Image.open(p).convert("RGB").resize((8, 8), Image.BILINEAR), np.float32).ravel()
                         / 255.0 for p in view.values("filepath")])

    train, val = ds.match_tags("train"), ds.match_tags("val")
    model = LogisticRegression(max_iter=2000).fit(features(train), train.values("ground_truth.label"))
    probs = model.predict_proba(features(val))
    val.set_values("predictions", [fo.Classification(label=model.classes_[i], confidence=float(p[i]))
                                   for i, p in zip(probs.argmax(1), probs)])
    return ds, info, result


def test_planted_slice_is_named_first(planted):
    from vetset.plugins.validate.slices import SliceOptions, failure_slices

    ds, info, result = planted
    logs = []
    sl = failure_slices(ds, ["airplane", "frog", "truck"], SliceOptions(), logs.append)
    first = sl["by_class"][0]
    assert (first["class"], first["property"], first["bin"]) == ("frog", "colour_mode", "grayscale")
    assert first["n"] == len(info["gray_val"]) == 20 and first["clear"]
    assert sl["worst"] == first and sl["metrics"]["worst_slice_error_rate"] == first["error_rate"]
    assert any("frog, colour_mode = grayscale" in m for m in logs)
    # no frog train image is grayscale: the slice is uncovered, as the audit's coverage table counts it
    audit = result["stages"]["audit"]
    frog_train = audit["coverage"]["train"]["colour"]["frog"]
    assert (first["train_n"], first["train_share"], first["uncovered"], first["worse"], first["priority"]) == \
        (0, 0.0, True, True, True) and frog_train["grayscale"] == 0
    assert sl["gap_share"] == audit["options"]["coverage_gap_share"] == 0.05 and sl["train_samples"] == 450
    assert any(m.startswith("[validate] worst slice: frog, colour_mode = grayscale") and
               "; train: 0 images of class frog in this bin (0%), not covered" in m for m in logs)
    # the saved view holds exactly the slice's errors, most confident first
    view = ds.load_saved_view(first["view"])
    assert first["view"] == "validation_errors/slice/frog/colour_mode=grayscale"
    assert len(view) == first["errors"]
    assert set(view.values("filepath")) <= set(info["gray_val"])
    assert all(p != "frog" for p in view.values("predictions.label"))
    confs = view.values("predictions.confidence")
    assert confs == sorted(confs, reverse=True)
    # counts agree with FiftyOne's own count of the slice
    frog_val = ds.match_tags("val").match_tags("train", bool=False)
    from fiftyone import ViewField as F

    gray = frog_val.match((F("ground_truth.label") == "frog") & (F("colour_mode") == "grayscale"))
    assert len(gray) == first["n"]
    assert len(gray.match(F("predictions.label") != "frog")) == first["errors"]
    # the other side: every frog train image is colour (the row ranks low; all rows kept)
    full = failure_slices(ds, ["airplane", "frog", "truck"], SliceOptions(rows=1000), lambda m: None)
    colour = next(r for r in full["by_class"] if (r["class"], r["bin"]) == ("frog", "colour"))
    assert colour["train_n"] == frog_train["colour"] == 150 and colour["train_share"] == 1.0


def test_planted_drift_is_named(planted):
    _, _, result = planted
    drift = result["stages"]["drift"]
    frog = [r for r in drift["drifted"] if r["class"] == "frog" and r["property"] == "colour_mode"]
    assert frog and frog[0]["verdict"] == "frog: val has 33% grayscale images (colour_mode); train has none"
    assert frog[0]["train_counts"][frog[0]["bins"].index("grayscale")] == 0
    assert drift["metrics"]["drift_class_cells"] >= 1
    from vetset.core.result_schema import validate_result

    validate_result(result)


# -- the stages in a run: digits, audit -> drift -> train -> validate -> report -------------------
@pytest.fixture(scope="module")
def digits_diagnosed(digits_dir, tmp_path_factory):
    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    name = "t-diagnose-digits"
    drop(name)
    hooks = Hooks()
    train = {"model_name": "test_resnet", "img_size": 32, "batch_size": 64, "lr": 3e-3, "warmup_epochs": 0,
             "epochs": 1, "threads": 1, "workers": 0}
    recipe = parse_recipe({"name": "t", "stages": {"audit": {"workers": 0}, "drift": {}, "train": train,
                                                   "validate": {"workers": 0, "brain": False}, "report": {}},
                           "fail_on": {"validate.metrics.worst_slice_error_rate": 1.0, "drift.metrics.max_tvd": 1.0}},
                          hooks.stages)
    logs: list[str] = []
    run = Run(recipe, hooks, data=digits_dir, dataset=name, out_dir=tmp_path_factory.mktemp("diag-digits"),
              log=logs.append)
    return run, run.execute(), logs


def test_slices_in_result_views_report_and_console(digits_diagnosed):
    from fiftyone import ViewField as F

    from vetset.core.result_schema import validate_result
    from vetset.plugins.validate.properties import Property, match_bin

    run, result, logs = digits_diagnosed
    validate_result(result)
    block = result["stages"]["validate"]
    sl = block["slices"]
    assert sl["num_samples"] == 359 and sl["by_class"], "digits give rankable slices"
    names = {p["name"] for p in sl["properties"]}
    assert {"sharpness", "brightness"} <= names and "phash" not in names and "duplicate_group" not in names
    ds = run.dataset
    val = ds.match_tags("val")
    props = {p["name"]: Property(p["name"], p["kind"], p["bins"], p["cuts"]) for p in sl["properties"]}
    for row in sl["by_class"][:3] + sl["across_classes"][:2]:  # every number recounted through FiftyOne
        view = val if row["class"] is None else val.match(F("ground_truth.label") == row["class"])
        inside = match_bin(view, props[row["property"]], row["bin"])
        assert len(inside) == row["n"]
        assert len(inside.match(F("predictions.label") != F("ground_truth.label"))) == row["errors"]
        if row.get("view"):
            assert len(ds.load_saved_view(row["view"])) == row["errors"]
    keys = [(not r["priority"], -r["score"]) for r in sl["by_class"]]
    assert keys == sorted(keys)  # priority rows (worse, uncovered in train) first, then by score
    assert sl["gap_share"] == result["stages"]["audit"]["options"]["coverage_gap_share"]
    train = ds.match_tags("train").match_tags("augmented", bool=False)
    assert sl["train_samples"] == len(train) == 1438
    for row in [r for r in sl["by_class"] if r["train_share"] is not None][:3]:  # train shares recounted too
        prop = props[row["property"]]
        cls = train.match(F("ground_truth.label") == row["class"])
        with_value = cls if prop.kind == "tag" else cls.exists("metadata.width" if prop.name == "size" else prop.name)
        assert len(match_bin(cls, prop, row["bin"])) == row["train_n"]
        assert row["train_share"] == pytest.approx(row["train_n"] / len(with_value), abs=1e-4)
        assert row["uncovered"] == (row["train_share"] < sl["gap_share"])
        assert row["priority"] == (row["uncovered"] and row["worse"])
    assert all(r["n"] >= sl["min_support"] for r in sl["by_class"])
    rows = sl["by_class"] + sl["across_classes"]
    assert all(r["rest_n"] >= sl["min_support"] and r["score"] == r["excess_ci"][0] <= r["excess"] <= r["excess_ci"][1]
               and r["clear"] == (r["score"] > 0) for r in rows)
    assert set(sl["not_ranked"]) == {"small_slice", "small_rest"} and "Newcombe" in sl["method"]
    assert block["metrics"]["worst_slice_error_rate"] == sl["by_class"][0]["error_rate"]
    assert result["fail_on"]["checked"]["validate.metrics.worst_slice_error_rate"]["value"] == sl["worst"]["error_rate"]
    assert any(m.startswith("[validate] worst slice: ") for m in logs)
    html = (run.out_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="sec-failure_slices"' in html and sl["by_class"][0]["label"].split(",")[0] in html
    w = sl["by_class"][0]
    assert "Newcombe" in html and f"({w['rest_errors']} of {w['rest_n']})" in html
    assert "train share (images)" in html and w["train_share"] is not None  # digits: no derived slice first
    assert f"{100 * w['train_share']:.0f}% ({w['train_n']})" in html
    assert 'id="sec-drift"' in html
    # the console summary at the end of `recipes run` names the worst slice and the drift verdict
    from vetset.plugins.report.console import diagnosis_lines

    lines = diagnosis_lines(result)
    w = sl["worst"]
    assert lines[0].startswith(f"worst val slice: {w['label']}: {w['errors']} of {w['n']} wrong ({w['error_rate']:.0%}")
    assert "drift: none between train and val" in lines  # a random split of one folder (test_drift_stage_on_digits)


def test_drift_stage_on_digits(digits_diagnosed):
    _, result, logs = digits_diagnosed
    drift = result["stages"]["drift"]
    assert drift["splits"] == ["val"] and drift["num_samples"] == {"train": 1438, "val": 359}
    overall = [r for r in drift["rows"] if r["class"] is None]
    assert overall and all(sum(r["train_counts"]) == 1438 and sum(r["counts"]) == 359 for r in overall
                           if not r["property"].startswith("tag "))
    # a random stratified split of one folder: no property drifts overall
    assert drift["metrics"]["drift_properties"] == 0 and drift["metrics"]["max_tvd"] < 0.1
    assert any(m.startswith("[drift] ") for m in logs)


def test_panel_lists_slices_and_opens_one(digits_diagnosed):
    from test_app_operators import _props, make_ctx

    from vetset.plugins.fiftyone_app.panel import AuditPanel

    run, result, _ = digits_diagnosed
    panel = AuditPanel()
    ctx = make_ctx(run.dataset, panel_state={})
    panel.on_load(ctx)
    rows = ctx.panel_state["slices"]
    worst = result["stages"]["validate"]["slices"]["by_class"][0]
    assert rows[0]["slice"] == worst["label"] and rows[0]["errors"] == f"{worst['errors']} / {worst['n']}"
    assert rows[0]["train"] == f"{worst['train_share']:.0%} ({worst['train_n']})" + \
        (", not covered" if worst["uncovered"] else "")
    assert "slices" in _props(panel.render(ctx))
    row = next(i for i, r in enumerate(rows) if r["view"])
    ctx = make_ctx(run.dataset, {"row": row}, panel_state=ctx.panel_state)
    panel.open_slice(ctx)
    ctx.ops.set_view.assert_called_once_with(name=rows[row]["view"])
