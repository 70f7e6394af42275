"""The validate stage: predictions, evaluation, brain runs, saved views, gap verdict, report sections."""

from __future__ import annotations

import numpy as np
import pytest

from vetset.plugins.validate.metrics import GapThresholds, gap_verdict

TRAIN = {"model_name": "test_resnet", "img_size": 32, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0,
         "epochs": 2, "threads": 1, "workers": 0}


def drop_dataset(name: str) -> None:
    """Delete a dataset left by an earlier session (its files may be gone with that session's tmp folder)."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="module")
def validated(digits_dir, tmp_path_factory):
    """Digits trained for 2 epochs with a tiny model, then validated: (run, result, logs)."""
    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    drop_dataset("t-validate-digits")
    hooks = Hooks()
    recipe = parse_recipe({"name": "t", "stages": {"train": TRAIN, "validate": {"workers": 0}}}, hooks.stages)
    logs: list[str] = []
    out = tmp_path_factory.mktemp("validate-run")
    run = Run(recipe, hooks, data=digits_dir, dataset="t-validate-digits", out_dir=out, log=logs.append)
    result = run.execute()
    return run, result, logs


def test_predictions_evaluation_and_views_match(validated):
    from fiftyone import ViewField as F

    run, result, logs = validated
    ds = run.dataset
    block = result["stages"]["validate"]
    val_view = ds.match_tags("val")
    n_train, n_val = len(ds.match_tags("train")), len(val_view)
    assert (n_train, n_val) == (1438, 359)
    assert block["splits"] == ["train", "val"]
    assert block["val"]["num_samples"] == n_val and block["train"]["num_samples"] == n_train
    assert len(ds.exists("predictions")) == len(ds)

    # the stored predictions are the checkpoint's: confidence is the softmax maximum of the stored logits
    logits = np.array(val_view.values("predictions.logits"), dtype=np.float64)
    conf = np.array(val_view.values("predictions.confidence"))
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose((p / p.sum(1, keepdims=True)).max(1), conf, atol=1e-5)
    labels = val_view.values("predictions.label")
    assert labels == [block["classes"][i] for i in logits.argmax(1)]

    # evaluate_classifications with eval_key "eval" on val only
    assert ds.list_evaluations() == ["eval"]
    correct = val_view.values("eval")
    gt = val_view.values("ground_truth.label")
    assert correct == [a == b for a, b in zip(labels, gt)]
    acc = sum(correct) / n_val
    assert block["val"]["accuracy"] == pytest.approx(acc, abs=1e-4)
    assert acc > 0.3  # 10 classes: chance is 0.1; 2 epochs of a 0.37 M-parameter model
    cm = np.array(block["val"]["confusion_matrix"]["matrix"])
    assert cm.sum() == n_val and np.trace(cm) == sum(correct)
    assert sum(m["support"] for m in block["val"]["per_class"].values()) == n_val

    # the saved view: val mistakes, most confident first; per-class views split it
    errors = ds.load_saved_view("validation_errors")
    assert len(errors) == n_val - sum(correct) == block["views"]["validation_errors"]
    assert block["metrics"]["validation_errors"] == len(errors)
    assert set(errors.distinct("tags")) >= {"val"} and "train" not in errors.distinct("tags")
    confs = errors.values("predictions.confidence")
    assert confs == sorted(confs, reverse=True)
    assert len(errors.match(F("predictions.label") == F("ground_truth.label"))) == 0
    per_class = block["views"]["per_class"]
    assert sum(per_class.values()) == len(errors)
    for cls, n in per_class.items():
        view = ds.load_saved_view(f"validation_errors/{cls}")
        assert len(view) == n and view.distinct("ground_truth.label") == [cls]
    top = block["top_errors"]
    assert [e["filepath"] for e in top] == errors.limit(24).values("filepath")
    assert any("saved view 'validation_errors'" in m for m in logs)

    # fiftyone-brain runs on the val predictions
    assert {"mistakenness", "hardness"} <= set(ds.list_brain_runs())
    assert len(val_view.exists("mistakenness")) == n_val and len(val_view.exists("hardness")) == n_val
    assert len(ds.match_tags("train").exists("mistakenness")) == 0


def test_gap_verdict_in_the_result(validated):
    _, result, _ = validated
    block = result["stages"]["validate"]
    gap = block["gap"]
    assert gap["verdict"] in ("overfitting", "underfitting", "fine")
    assert gap["train_acc"] == pytest.approx(block["train"]["accuracy"], abs=1e-4)
    assert gap["val_acc"] == pytest.approx(block["val"]["accuracy"], abs=1e-4)
    assert gap["acc_gap"] == pytest.approx(gap["train_acc"] - gap["val_acc"], abs=2e-4)
    assert gap["train_loss"] > 0 and gap["val_loss"] > 0
    assert gap["underfitting"] == (gap["train_acc"] < 0.9)
    assert f"train acc {gap['train_acc']:.3f}" in gap["summary"]
    assert block["metrics"]["train_val_acc_gap"] == gap["acc_gap"]


def test_rerun_does_not_duplicate(validated):
    run, result, _ = validated
    ds = run.dataset
    views_before = sorted(ds.list_saved_views())
    again = run.hooks.stages["validate"].run(run, run.recipe.options("validate"))
    run.save_views("validate")
    assert ds.list_evaluations() == ["eval"]
    assert sorted(ds.list_saved_views()) == views_before
    assert len(ds.exists("predictions")) == len(ds)
    assert again["val"]["accuracy"] == result["stages"]["validate"]["val"]["accuracy"]


def test_resume_continues_training_from_last_checkpoint(validated, digits_dir):
    from vetset.core.run import Run

    run, result, _ = validated
    (run.out_dir / "result.json").unlink()  # the train stage must run again, and resume from last.pt
    logs: list[str] = []
    again = Run(run.recipe, run.hooks, data=digits_dir, dataset=run.dataset.name, out_dir=run.out_dir,
                resume=True, log=logs.append).execute()
    assert any("resuming from" in m for m in logs)
    assert not any(m.startswith("[train] epoch") for m in logs)  # both epochs were already done
    assert again["stages"]["train"]["history"] == result["stages"]["train"]["history"]
    assert again["stages"]["validate"]["val"]["accuracy"] == result["stages"]["validate"]["val"]["accuracy"]


def test_report_sections_render_from_the_result(validated):
    from vetset.core.report_kit import ReportContext

    run, result, _ = validated
    sections = {s.name: s for s in run.hooks.report_sections.values()}
    ctx = ReportContext(result=result, dataset=run.dataset, out_dir=run.out_dir)
    html = {name: sections[name].render(result, ctx) for name in
            ("training", "validation", "confusion_matrix", "per_class_metrics", "validation_errors")}
    assert "plotly" in html["training"] and "resnet" in html["training"]
    assert result["stages"]["validate"]["gap"]["verdict"] in html["validation"]
    assert html["confusion_matrix"].count('class="plot"') == 1
    assert html["per_class_metrics"].count("<tr>") == 11  # header + 10 classes
    n_thumbs = len(result["stages"]["validate"]["top_errors"])
    assert html["validation_errors"].count("data:image/jpeg;base64,") == n_thumbs > 0
    empty = {"stages": {}}
    assert all(sections[n].render(empty, ReportContext(result=empty)) is None for n in html)


def _split(acc, loss, recalls, support=20):
    return {"accuracy": acc, "loss": loss,
            "per_class": {c: {"recall": r, "support": support} for c, r in recalls.items()}}


def test_gap_verdict_thresholds():
    t = GapThresholds()
    over = gap_verdict(_split(0.99, 0.05, {"a": 1.0, "b": 0.98}), _split(0.80, 0.70, {"a": 0.95, "b": 0.65}), t)
    assert over["verdict"] == "overfitting" and over["overfitting"] and not over["underfitting"]
    assert over["acc_gap"] == pytest.approx(0.19)
    assert [c["class"] for c in over["classes_with_recall_gap"]] == ["b"]
    assert over["classes_with_recall_gap"][0]["gap"] == pytest.approx(0.33)

    under = gap_verdict(_split(0.62, 1.1, {}), _split(0.60, 1.2, {}), t)
    assert under["verdict"] == "underfitting" and not under["overfitting"]
    fine = gap_verdict(_split(0.95, 0.2, {}), _split(0.90, 0.3, {}), t)
    assert fine["verdict"] == "fine" and fine["reasons"][0].startswith("train accuracy 0.950 and val accuracy 0.900")
    # both: the larger of bias (1 - train acc) and variance (train - val acc) names it
    assert gap_verdict(_split(0.85, 0.4, {}), _split(0.55, 1.3, {}), t)["verdict"] == "overfitting"
    assert gap_verdict(_split(0.70, 0.8, {}), _split(0.55, 1.0, {}), t)["verdict"] == "underfitting"
    # too few val samples of a class: not listed
    few = gap_verdict(_split(0.99, 0.1, {"a": 1.0}), _split(0.7, 0.9, {"a": 0.0}, support=3), t)
    assert few["classes_with_recall_gap"] == []
    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}, {"epoch": 3, "val_loss": 0.6}]
    rose = gap_verdict(_split(0.99, 0.1, {}), _split(0.8, 0.6, {}), t, history=history)
    assert any("val loss rose from 0.4000 (epoch 2) to 0.6000 (epoch 3)" in r for r in rose["reasons"])


def test_validate_without_a_model_says_what_to_do(hooks, digits_dir, fresh_name, tmp_path):
    from vetset.core.errors import VetsetError
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    drop_dataset(fresh_name)
    recipe = parse_recipe({"name": "t", "stages": {"validate": {}}}, hooks.stages)
    with pytest.raises(VetsetError, match="put the train stage before validate"):
        Run(recipe, hooks, data=digits_dir, dataset=fresh_name, out_dir=tmp_path, log=lambda m: None).execute()


def test_cli_run_prints_how_to_open_the_errors_in_the_app(digits_dir, tmp_path):
    import yaml
    from conftest import run_cli

    drop_dataset("t-validate-cli")
    recipe = tmp_path / "tv.yaml"
    recipe.write_text(yaml.safe_dump({"name": "tv", "stages": {"train": dict(TRAIN, epochs=1), "validate": {}}}))
    res = run_cli("run", str(recipe), "--data", str(digits_dir), "--dataset", "t-validate-cli", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout.replace("\n", "")  # rich wraps long lines at the terminal width
    assert "open the validation errors in the App: recipes app --dataset t-validate-cli" in out
    assert f"checkpoint: {tmp_path / 'o' / 'train' / 'best.pt'}" in out
    assert "[validate] val accuracy" in out


def test_bad_train_options_fail_before_any_stage_runs(hooks, digits_dir, fresh_name, tmp_path):
    from vetset.core.errors import RecipeError
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    drop_dataset(fresh_name)
    recipe = parse_recipe({"name": "t", "stages": {"validate": {}, "train": {"model_name": "resnet10x"}}},
                          hooks.stages)
    logs: list[str] = []
    with pytest.raises(RecipeError, match="stages.train.model_name: 'resnet10x' is not a timm model name"):
        Run(recipe, hooks, data=digits_dir, dataset=fresh_name, out_dir=tmp_path, log=logs.append).execute()
    assert logs == []  # the validate stage, listed first, never started


def test_gap_from_training_history_when_train_is_not_predicted(validated):
    from vetset.plugins.validate.stage import ValidateOptions

    run, result, _ = validated
    block = run.hooks.stages["validate"].run(run, ValidateOptions(gap_on_train=False, brain=False, workers=0))
    last = result["stages"]["train"]["history"][-1]
    assert block["splits"] == ["val"] and block["brain"] is None
    assert block["gap"]["train_source"].startswith("last epoch's running training metrics")
    assert block["gap"]["train_acc"] == pytest.approx(last["train_acc"], abs=1e-4)
    # predictions of samples not predicted this time are cleared, not left stale
    assert len(run.dataset.match_tags("train").exists("predictions")) == 0
    assert len(run.dataset.match_tags("val").exists("predictions")) == block["val"]["num_samples"]


def test_the_train_split_is_scored_on_the_images_the_trainer_fitted(validated, tmp_path):
    """Augmented samples of an earlier --out stay tagged train but the trainer leaves them out
    (``training_view``); the train accuracy of the gap verdict must leave them out too."""
    import shutil

    import fiftyone as fo

    run, result, _ = validated
    ds = run.dataset
    sources = ds.match_tags("train").limit(6).values("filepath")
    (tmp_path / "old-out").mkdir()
    stale = [fo.Sample(filepath=shutil.copy(p, tmp_path / "old-out" / f"{i}.png"), tags=["train", "augmented"],
                       ground_truth=fo.Classification(label="0")) for i, p in enumerate(sources)]
    ids = ds.add_samples(stale)
    info = dict(ds.info or {})
    before = dict(info.get("vetset") or {})
    info["vetset"] = {**before, "augment_folder": str(tmp_path / "latest-out")}
    ds.info = info
    ds.save()
    try:
        again = run.hooks.stages["validate"].run(run, run.recipe.options("validate"))
        assert again["train"]["num_samples"] == result["stages"]["validate"]["train"]["num_samples"] == 1438
        assert len(ds.select(ids).exists("predictions")) == 0
    finally:
        ds.delete_samples(ids)
        info["vetset"] = before
        ds.info = info
        ds.save()
