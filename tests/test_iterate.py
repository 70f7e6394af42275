"""The retrain loop: paired bootstrap and verdict, slice targets, and one round on the planted CIFAR case."""

from __future__ import annotations

import numpy as np
import pytest

from vetset.plugins.iterate.compare import paired_bootstrap, per_class_error, verdict
from vetset.plugins.iterate.stage import IterateOptions, slice_targets


def test_paired_bootstrap_matches_direct_metrics():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    old = np.where(rng.random(400) < 0.6, y, rng.integers(0, 4, 400))
    new = np.where(rng.random(400) < 0.8, y, rng.integers(0, 4, 400))
    s = paired_bootstrap(y, old, new, 4, n_boot=1000)
    assert s["accuracy"]["old"] == pytest.approx((old == y).mean(), abs=1e-4)
    assert s["accuracy"]["new"] == pytest.approx((new == y).mean(), abs=1e-4)
    assert s["macro_f1"]["old"] == pytest.approx(f1_score(y, old, average="macro"), abs=1e-4)
    assert s["macro_f1"]["new"] == pytest.approx(f1_score(y, new, average="macro"), abs=1e-4)
    lo, hi = s["accuracy"]["ci"]
    assert lo < s["accuracy"]["diff"] < hi and lo > 0  # a 20-point gain on 400 images is clear
    assert verdict(s) == "better" and verdict(paired_bootstrap(y, new, old, 4, n_boot=1000)) == "worse"
    assert verdict(paired_bootstrap(y, old, old, 4, n_boot=200)) == "no clear difference"
    assert s["fixed"] == int(((old != y) & (new == y)).sum()) and s["broken"] == int(((old == y) & (new != y)).sum())
    assert s == paired_bootstrap(y, old, new, 4, n_boot=1000)  # seeded
    pc = per_class_error(y, old, new, ["a", "b", "c", "d"])
    assert pc["a"]["old"] == pytest.approx((old[y == 0] != 0).mean(), abs=1e-4)


def test_slice_targets_aim_at_coverage_properties_only():
    rows = [{"class": "truck", "property": "sharpness", "bin": "low", "n": 11, "rest_n": 49, "errors": 10, "excess": 0.5},
            {"class": "frog", "property": "colour_mode", "bin": "grayscale", "n": 20, "rest_n": 40, "errors": 11,
             "excess": 0.37},
            {"class": "frog", "property": "orientation", "bin": "portrait", "n": 2, "rest_n": 58, "errors": 1,
             "excess": 0.2},
            {"class": "truck", "property": "clarity", "bin": "sharp", "n": 20, "rest_n": 40, "errors": 0, "excess": -0.1}]
    rows.insert(0, {"class": "frog", "property": "colour_mode", "bin": "colour", "n": 40, "rest_n": 20, "errors": 30,
                    "excess": 0.2})  # no policy adds colour: not aimed at
    addable = {("colour", "grayscale"), ("orientation", "portrait"), ("clarity", "blurry")}
    targets, aimed = slice_targets({"by_class": rows}, IterateOptions(), addable)
    assert targets == {"frog": {"colour": {"grayscale": 0.3333}, "orientation": {"portrait": 0.1}}}
    assert [a["bin"] for a in aimed] == ["grayscale", "portrait"]
    many = [{"class": "a", "property": "orientation", "bin": b, "n": 30, "rest_n": 30, "errors": 5, "excess": 0.1}
            for b in ("portrait", "landscape", "square")]
    targets, _ = slice_targets({"by_class": many}, IterateOptions(max_share=0.5))
    assert sum(targets["a"]["orientation"].values()) < 1.0  # the planner's rule: a class's shares sum under 1


def test_slice_targets_aim_at_uncovered_worse_slices_first():
    # a covered slice with the higher score stored first; the slice worse in a bin train lacks (priority) is aimed first
    covered = {"class": "truck", "property": "orientation", "bin": "portrait", "n": 12, "rest_n": 48, "errors": 10,
               "excess": 0.6, "score": 0.4, "priority": False, "uncovered": False}
    planted = {"class": "frog", "property": "colour_mode", "bin": "grayscale", "n": 20, "rest_n": 40, "errors": 9,
               "excess": 0.225, "score": -0.0185, "priority": True, "uncovered": True}
    addable = {("colour", "grayscale"), ("orientation", "portrait")}
    targets, aimed = slice_targets({"by_class": [covered, planted]}, IterateOptions(aim_slices=1), addable)
    assert aimed == [planted] and targets == {"frog": {"colour": {"grayscale": 0.3333}}}
    _, aimed = slice_targets({"by_class": [covered, planted]}, IterateOptions(), addable)
    assert aimed == [planted, covered]


@pytest.mark.slow
def test_one_round_on_the_planted_case(cifar_test_dir, tmp_path):
    """audit -> augment (nothing) -> train -> validate -> iterate (1 round) -> report on the planted CIFAR tree."""
    import fiftyone as fo
    from fiftyone import ViewField as F
    from slices_data import write_planted

    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.result_schema import validate_result
    from vetset.core.run import Run

    name = "t-iterate-planted"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    info = write_planted(cifar_test_dir, tmp_path / "data")
    hooks = Hooks()
    train = {"model_name": "test_resnet", "img_size": 32, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0,
             "epochs": 3, "threads": 1, "workers": 0}
    recipe = parse_recipe({"name": "t", "stages": {
        "audit": {"workers": 0}, "augment": {"min_count": 0, "coverage_targets": {}, "workers": 0}, "train": train,
        "validate": {"workers": 0, "brain": False}, "iterate": {"max_rounds": 1, "n_boot": 500}, "report": {}}},
        hooks.stages)
    logs: list[str] = []
    run = Run(recipe, hooks, data=info["root"], dataset=name, out_dir=tmp_path / "out", log=logs.append)
    result = run.execute()
    validate_result(result)
    it = result["stages"]["iterate"]
    assert [r["round"] for r in it["rounds"]] == [0, 1]
    r1 = it["rounds"][1]
    assert "frog" in r1["targets"] and r1["targets"]["frog"]["colour"]["grayscale"] == pytest.approx(1 / 3, abs=1e-3)
    assert r1["augment"]["images"] > 0
    # round 1 fine-tuned the round-0 model (start: kept) with the train stage's budget and seed
    assert r1["start"]["mode"] == "kept" and r1["start"]["from_round"] == 0
    assert r1["start"]["checkpoint"] == it["rounds"][0]["checkpoint"] == result["stages"]["train"]["checkpoint"]
    assert r1["start"]["weights"]["source"] == "checkpoint" and r1["start"]["weights"]["head"] == "kept"
    assert (r1["start"]["epochs"], r1["start"]["seed"]) == (3, 0) and len(r1["history"]) == 3
    # it starts where round 0 ended, not from random weights: its first epoch beats round 0's first epoch
    r0_hist = result["stages"]["train"]["history"]
    assert r1["history"][0]["val_loss"] < r0_hist[0]["val_loss"]
    ds = run.dataset
    # the planner wrote grayscale frogs: the new images' colour is decided from their pixels by the audit rule
    from pathlib import Path

    from slices_data import is_colour

    new_frogs = [p for p in ds.match_tags("augmented").values("filepath") if "/frog/" in p and r1["augment"]["output_dir"] in p]
    assert new_frogs and sum(not is_colour(Path(p)) for p in new_frogs) >= 0.9 * len(new_frogs)
    # both models' predictions, each with its eval_key; the comparison's numbers are FiftyOne's
    assert {"eval_round0", "eval_round1"} <= set(ds.list_evaluations())
    val = ds.match_tags("val")
    for r in it["rounds"]:
        acc = len(val.match(F(f"{r['pred_field']}.label") == F("ground_truth.label"))) / len(val)
        assert r["accuracy"] == pytest.approx(acc, abs=1e-4)
    c = r1["compare"]
    assert c["verdict"] in ("better", "no clear difference", "worse") and c["against_round"] == 0
    assert c["accuracy"]["ci"][0] <= c["accuracy"]["diff"] <= c["accuracy"]["ci"][1]
    assert len(ds.load_saved_view("iterate/round1/fixed")) == c["fixed"]
    assert len(ds.load_saved_view("iterate/round1/broken")) == c["broken"]
    gray = [s for s in c["per_slice"] if s["label"] == "frog, colour_mode = grayscale"]
    assert gray and gray[0]["aimed"] and gray[0]["n"] == 20
    # the kept checkpoint is the better round's, under its own name
    assert (tmp_path / "out" / "iterate" / "best.pt").is_file()
    assert it["best_round"] == (1 if c["verdict"] == "better" or (c["verdict"] == "no clear difference"
                                                                    and c["accuracy"]["diff"] > 0) else 0)
    assert any(m.startswith("[iterate] round 1 vs round 0: accuracy") for m in logs)
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="sec-iterate"' in html and "Retraining rounds" in html
    section = html.split('id="sec-iterate"', 1)[1]
    assert "trained from" in section and "round 0, 3 more epochs" in section and f"{c['accuracy']['diff']:+.3f}" in section
    # console summary: the round against round 0, with the numbers of result.json
    from vetset.plugins.report.console import diagnosis_lines

    lines = diagnosis_lines(result)
    m = c["accuracy"]
    assert f"round 1 vs round 0: accuracy {m['old']:.3f} -> {m['new']:.3f} ({m['diff']:+.3f}" in "\n".join(lines)
    assert any(x.startswith(f"kept round {it['best_round']}: ") for x in lines)
    # App panel: the rounds table; Fixed / Broken load the round's saved views
    from test_app_operators import _props, make_ctx

    from vetset.plugins.fiftyone_app.panel import AuditPanel

    panel = AuditPanel()
    ctx = make_ctx(ds, panel_state={})
    panel.on_load(ctx)
    rows = ctx.panel_state["rounds"]
    assert [r["round"] for r in rows] == [0, 1] and "rounds" in _props(panel.render(ctx))
    assert rows[1]["changed"] == f"{c['fixed']} / {c['broken']}" and rows[1]["verdict"].startswith(c["verdict"])
    ctx = make_ctx(ds, {"row": 1}, panel_state=ctx.panel_state)
    panel.open_fixed(ctx)
    ctx.ops.set_view.assert_called_once_with(name="iterate/round1/fixed")


def test_round_fine_tunes_the_kept_checkpoint(cifar_test_dir, tmp_path):
    """A round with ``start: kept`` loads the kept model's tensors; ``scratch`` starts from the seed's random init."""
    import torch

    from vetset.plugins.iterate.stage import round_train_options
    from vetset.plugins.train.checkpoint import load_checkpoint
    from vetset.plugins.train.options import TrainOptions
    from vetset.plugins.train.stage import fit

    classes = ["cat", "ship"]
    items = [(str(p), i) for i, c in enumerate(classes) for p in sorted((cifar_test_dir / c).glob("*.jpg"))[:24]]
    base = TrainOptions(model_name="test_resnet", img_size=32, batch_size=16, epochs=2, lr=3e-3, warmup_epochs=0,
                        threads=1, workers=0, seed=3)
    first = fit(items, items[::3], classes, base, out_dir=tmp_path / "r0", log=lambda m: None)
    block = {"finetune": first.finetune}
    ckpt0 = load_checkpoint(first.best_checkpoint)["state_dict"]
    opts = round_train_options(base, block, first.best_checkpoint)
    assert opts.weights == first.best_checkpoint and opts.head_epochs == 0 and opts.backbone_lr_scale == 1.0
    assert (opts.epochs, opts.seed, opts.lr) == (base.epochs, base.seed, base.lr)  # same budget and seed
    # a learning rate too small to move the weights: the round's model is the kept one, tensor for tensor
    still = opts.model_copy(update={"lr": 1e-12, "min_lr": 0.0, "weight_decay": 0.0, "epochs": 1})
    logs: list[str] = []
    out = fit(items, items[::3], classes, still, out_dir=tmp_path / "r1", log=logs.append)
    assert out.weights["source"] == "checkpoint" and out.weights["head"] == "kept"
    assert out.weights["tensors_not_loaded"] == 0
    got = load_checkpoint(out.best_checkpoint)["state_dict"]
    weights = [k for k, v in ckpt0.items() if v.is_floating_point() and v.ndim >= 2]
    assert weights and all(torch.allclose(got[k], ckpt0[k], atol=1e-6) for k in weights)
    # its first epoch's val loss is the kept model's (BatchNorm statistics aside), far below a fresh model's
    fresh = fit(items, items[::3], classes, round_train_options(base, block, first.best_checkpoint, "scratch")
                .model_copy(update={"lr": 1e-12, "min_lr": 0.0, "epochs": 1}), out_dir=tmp_path / "s1",
                log=lambda m: None)
    assert fresh.weights["source"] == "none"
    kept_loss = min(h["val_loss"] for h in first.history)
    assert out.history[0]["val_loss"] == pytest.approx(kept_loss, abs=0.03)
    assert fresh.history[0]["val_loss"] > kept_loss + 0.03
