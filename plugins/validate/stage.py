"""Built-in plugin: the ``validate`` stage, the ``validation_errors`` saved views, report sections.

The stage loads the train stage's best checkpoint (``weights_only=True``), predicts every
readable sample of the ``train``, ``val`` and ``test`` splits, and writes

* ``predictions``: ``fo.Classification`` with ``label``, ``confidence`` (softmax maximum)
  and ``logits`` (float32, class order of the checkpoint);
* ``evaluate_classifications`` runs with ``eval_key="eval"`` (val) and ``"eval_test"``
  (test), which add the per-sample boolean fields ``eval`` / ``eval_test``;
* fiftyone-brain ``compute_mistakenness`` (field ``mistakenness``, from the logits) and
  ``compute_hardness`` (field ``hardness``) on the val predictions;
* saved views ``validation_errors`` (val samples whose prediction differs from the ground
  truth, most confident mistakes first) and ``validation_errors/<class>`` (the same,
  restricted to one ground-truth class; only classes with errors);
* failure slices (:mod:`.slices`): error rate per class x audit property bin with Wilson
  intervals, ranked by the low end of the Newcombe interval of the excess over the rest
  of the class, slices worse than that rest in a bin the class's train images lack
  (under the audit's ``coverage_gap_share``) first, and saved views ``validation_errors/slice/<class>/<property>=<bin>`` of the
  worst ones; the same on the test split when there is one (``test_errors/slice/...``).

Result block (``result["stages"]["validate"]``)::

    {"checkpoint", "model_name", "classes", "pred_field": "predictions",
     "eval_keys": {"val": "eval", "test": "eval_test"},
     "splits": ["train", "val", "test"],          # those present, in this order
     "train"|"val"|"test": {num_samples, accuracy, loss, macro, weighted,
                per_class: {class: {precision, recall, f1, support}},
                confusion_matrix: {classes, matrix}},
     "gap": {...see vetset.plugins.validate.metrics.gap_verdict...} | None (no train metrics),
     "brain": {"mistakenness_field", "hardness_field"} | None,
     "views": {"validation_errors": n, "per_class": {class: n}},
     "top_errors": [{"filepath", "ground_truth", "prediction", "confidence", "mistakenness"}],
     "app": "recipes app --dataset NAME",
     "slices": {...see vetset.plugins.validate.slices.failure_slices...} | None (slices.enabled false),
     "test_slices": the same for the test split (views ``test_errors/slice/...``) | None (no test split),
     "metrics": {"val_accuracy", "val_error_rate", "val_loss", "validation_errors",
                 and with a gap: "train_accuracy", "train_val_acc_gap", "overfitting" (0/1),
                 "underfitting" (0/1), "classes_with_recall_gap"; with a test split:
                 "test_accuracy", "test_error_rate"; with slices: "worst_slice_error_rate",
                 "worst_slice_excess", "slices_clearly_worse", "slices_uncovered_worse"; with test
                 slices the same four prefixed ``test_``}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vetset.core.errors import VetsetError
from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import ReportSection, Stage, ViewSpec
from vetset.plugins.validate.diagnose_report import render_drift, render_slices
from vetset.plugins.validate.drift import DriftOptions, drift_stage
from vetset.plugins.validate.metrics import GapThresholds, gap_verdict, split_metrics
from vetset.plugins.validate.slices import SLICE_VIEW_PREFIX, SliceOptions, failure_slices

PRED_FIELD = "predictions"
GT_FIELD = "ground_truth"
EVAL_KEYS = {"val": "eval", "test": "eval_test"}
ERRORS_VIEW = "validation_errors"
MISTAKENNESS_FIELD = "mistakenness"
HARDNESS_FIELD = "hardness"


class ValidateOptions(GapThresholds):
    """``stages.validate`` options (the gap thresholds of :class:`GapThresholds` included).

    Attributes:
        checkpoint: model checkpoint to validate; default the train stage's best checkpoint.
        gap_on_train: predict the train split in eval mode (no augmentation) for the
            train/validation comparison; ``false`` uses the last epoch's running train
            metrics instead (cheaper, but measured with augmentation and dropout on).
        brain: run fiftyone-brain ``compute_mistakenness`` and ``compute_hardness``.
        top_errors: how many of the most confident errors the result (and report) keep.
        batch_size: inference batch size; default the checkpoint's training batch size.
        workers: DataLoader worker processes; ``None`` = automatic.
        threads: CPU threads for inference (``torch.set_num_threads``); ``None`` = the
            train stage's ``threads`` option (else torch's setting).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        amp: ``auto``, ``bfloat16``, ``float16`` or ``off`` (as in ``train``).
        slices: failure slices of the val split (:class:`~.slices.SliceOptions`).
    """

    checkpoint: str | None = None
    gap_on_train: bool = True
    brain: bool = True
    top_errors: Count = Field(24, ge=0)
    batch_size: Count | None = Field(None, ge=1)
    workers: Count | None = Field(None, ge=0)
    threads: Count | None = Field(None, ge=1)
    device: str = "auto"
    amp: Literal["auto", "bfloat16", "float16", "off"] = "auto"
    slices: SliceOptions = SliceOptions()


def errors_view(dataset: Any, label: str | None = None) -> Any:
    """Val samples whose ``predictions`` label differs from ``ground_truth``, most confident first.

    Args:
        dataset: the FiftyOne dataset.
        label: restrict to samples whose ground truth is this class.

    Returns:
        A ``DatasetView``, or ``None`` when the dataset has no ``predictions`` field yet.
    """
    from fiftyone import ViewField as F

    from vetset.core.dataset import split_view

    if PRED_FIELD not in dataset.get_field_schema():
        return None
    view = split_view(dataset, "val").exists(PRED_FIELD)
    if label is not None:
        view = view.match(F(f"{GT_FIELD}.label") == label)
    return view.match(F(f"{PRED_FIELD}.label") != F(f"{GT_FIELD}.label")).sort_by(
        F(f"{PRED_FIELD}.confidence"), reverse=True)


def _write_predictions(view: Any, classes: list[str], probs: Any, logits: Any) -> None:
    import fiftyone as fo

    labels = probs.argmax(1)
    view.set_values(PRED_FIELD, [
        fo.Classification(label=classes[int(i)], confidence=float(p[int(i)]), logits=lg.tolist())
        for i, p, lg in zip(labels, probs, logits)])


def _loss(logits: Any, gt: list[str | None], classes: list[str]) -> float | None:
    import numpy as np

    from vetset.plugins.train.stage import cross_entropy

    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, g in enumerate(gt) if g in index]
    if not keep:
        return None
    return cross_entropy(logits[keep], np.array([index[gt[i]] for i in keep]))


def _reset_runs(dataset: Any) -> None:
    for key in EVAL_KEYS.values():
        if key in dataset.list_evaluations():
            dataset.delete_evaluation(key)
    for key in (MISTAKENNESS_FIELD, HARDNESS_FIELD):
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)


def _save_class_views(dataset: Any, classes: list[str]) -> dict[str, int]:
    """(Re)save ``validation_errors/<class>`` for classes with errors; drop stale ones."""
    counts = {}
    dataset.reload()  # see Run.save_views: never write back a stale saved-view list
    for cls in classes:
        view = errors_view(dataset, cls)
        n = len(view) if view is not None else 0
        name = f"{ERRORS_VIEW}/{cls}"
        if n:
            dataset.save_view(name, view, description=f"val samples of class {cls} that the model got wrong, "
                                                      "most confident first", overwrite=True)
            counts[cls] = n
    for name in dataset.list_saved_views():
        if name.startswith(ERRORS_VIEW + "/") and not name.startswith(SLICE_VIEW_PREFIX) \
                and name[len(ERRORS_VIEW) + 1:] not in counts:
            dataset.delete_saved_view(name)
    return counts


def _predict_splits(run: Any, ckpt: dict[str, Any], model: Any, options: ValidateOptions) -> dict[str, Any]:
    """Predict, store and evaluate each split; returns ``{split: split_metrics(...)}``."""
    from vetset.core.dataset import split_view, training_view
    from vetset.plugins.train.stage import predict

    classes = list(ckpt["classes"])
    pred_opts = {"batch_size": options.batch_size or ckpt["options"].get("batch_size", 64),
                 "workers": options.workers, "amp": options.amp,
                 "threads": options.threads or ckpt["options"].get("threads")}
    ds = run.dataset
    splits: dict[str, Any] = {}
    predicted: set[str] = set()
    for split in ("train", "val", "test"):
        if split == "train" and not options.gap_on_train:
            continue
        # train: the images the trainer fitted on (an earlier --out's augmented set is left out, as there)
        view = training_view(ds)[0] if split == "train" else split_view(ds, split)
        if not len(view):
            continue
        ids, paths, gt = view.values(["id", "filepath", f"{GT_FIELD}.label"])
        run.log(f"[validate] predicting {len(paths)} {split} images")
        probs, logits = predict(model, paths, ckpt["data_config"], pred_opts)
        _write_predictions(view, classes, probs, logits)
        predicted.update(ids)
        results = view.evaluate_classifications(PRED_FIELD, gt_field=GT_FIELD, eval_key=EVAL_KEYS.get(split),
                                                classes=classes, progress=False)
        splits[split] = split_metrics(results, classes, _loss(logits, gt, classes))
    stale = set(ds.exists(PRED_FIELD).values("id")) - predicted  # e.g. files that became unreadable
    if stale:
        ds.select(list(stale)).set_field(PRED_FIELD, None).save()
    return splits


def _top_errors(errors: Any, n: int, with_brain: bool) -> list[dict[str, Any]]:
    if not n or not len(errors):
        return []
    head = errors.limit(n)
    cols = head.values(["filepath", f"{GT_FIELD}.label", f"{PRED_FIELD}.label", f"{PRED_FIELD}.confidence"])
    mist = head.values(MISTAKENNESS_FIELD) if with_brain else [None] * len(cols[0])
    return [{"filepath": f, "ground_truth": g, "prediction": p, "confidence": round(float(c), 4),
             "mistakenness": None if m is None else round(float(m), 4)} for f, g, p, c, m in zip(*cols, mist)]


def _validate(run: Any, options: ValidateOptions) -> dict[str, Any]:
    import fiftyone.brain as fob

    from vetset.core.dataset import split_view
    from vetset.plugins.train.checkpoint import load_checkpoint, model_from_checkpoint
    from vetset.plugins.train.data import resolve_device

    train_result = run.results.get("train") or {}
    path = options.checkpoint or train_result.get("checkpoint")
    if not path:
        raise VetsetError("The validate stage needs a model: put the train stage before validate in the recipe, "
                          "or set stages.validate.checkpoint to a best.pt file.")
    ckpt = load_checkpoint(path)
    classes = list(ckpt["classes"])
    model = model_from_checkpoint(ckpt, resolve_device(options.device))
    ds = run.dataset
    _reset_runs(ds)
    splits = _predict_splits(run, ckpt, model, options)
    if "val" not in splits:
        raise VetsetError("The dataset has no readable val samples to validate on; load data with a val split "
                          "or set data.val_fraction in the recipe.")
    brain = None
    if options.brain:
        val_view = split_view(ds, "val").exists(PRED_FIELD)
        fob.compute_mistakenness(val_view, PRED_FIELD, label_field=GT_FIELD, mistakenness_field=MISTAKENNESS_FIELD,
                                 use_logits=True, progress=False)
        fob.compute_hardness(val_view, PRED_FIELD, hardness_field=HARDNESS_FIELD, progress=False)
        brain = {"mistakenness_field": MISTAKENNESS_FIELD, "hardness_field": HARDNESS_FIELD}

    if "train" in splits:
        train_block = {**splits["train"], "source": "eval-mode predictions on the train split"}
    else:  # gap_on_train: false -> the trainer's last running metrics, when it reported any
        last = (train_result.get("history") or [{}])[-1]
        train_block = None if last.get("train_acc") is None else {
            "accuracy": last["train_acc"], "loss": last.get("train_loss"), "per_class": {},
            "source": "last epoch's running training metrics (augmented)"}
    gap = None if train_block is None else gap_verdict(
        train_block, splits["val"], GapThresholds(**options.model_dump(include=set(GapThresholds.model_fields))),
        history=train_result.get("history"))

    errors = errors_view(ds)
    per_class_views = _save_class_views(ds, classes)
    top = _top_errors(errors, options.top_errors, brain is not None)
    n_errors = len(errors)
    val = splits["val"]
    metrics = {"val_accuracy": val["accuracy"], "val_error_rate": round(1.0 - val["accuracy"], 4),
               "val_loss": val["loss"], "validation_errors": n_errors}
    if gap is not None:
        metrics.update({"train_accuracy": gap["train_acc"], "train_val_acc_gap": gap["acc_gap"],
                        "overfitting": int(gap["overfitting"]), "underfitting": int(gap["underfitting"]),
                        "classes_with_recall_gap": len(gap["classes_with_recall_gap"])})
    if "test" in splits:
        metrics["test_accuracy"] = splits["test"]["accuracy"]
        metrics["test_error_rate"] = round(1.0 - splits["test"]["accuracy"], 4)
    run.log(f"[validate] val accuracy {val['accuracy']:.3f}, {n_errors} errors in saved view {ERRORS_VIEW!r}")
    run.log(f"[validate] {gap['summary'] if gap else 'no train metrics: no train/validation comparison'}")
    # a slice is uncovered by the audit's coverage-gap threshold: the one the audit ran with, else its default
    gap_share = ((run.results.get("audit") or {}).get("options") or {}).get("coverage_gap_share")
    slices = failure_slices(ds, classes, options.slices, run.log, gap_share=gap_share) \
        if options.slices.enabled else None
    if slices is not None:
        metrics.update(slices["metrics"])
    test_slices = None
    if options.slices.enabled and "test" in splits:
        test_slices = failure_slices(ds, classes, options.slices, run.log, split="test", gap_share=gap_share)
        metrics.update({f"test_{k}": v for k, v in test_slices["metrics"].items()})
    return {
        "checkpoint": str(path), "model_name": ckpt["model_name"], "classes": classes, "pred_field": PRED_FIELD,
        "eval_keys": {s: k for s, k in EVAL_KEYS.items() if s in splits}, "splits": list(splits), **splits, "gap": gap,
        "brain": brain, "views": {ERRORS_VIEW: n_errors, "per_class": per_class_views}, "top_errors": top,
        "slices": slices, "test_slices": test_slices,
        "app": f"recipes app --dataset {ds.name}", "metrics": metrics,
    }


@hookimpl
def vetset_register_stages(register):
    register(Stage("validate", _validate, ValidateOptions,
                   "Predict val/test with the trained model, evaluate in FiftyOne, compare train vs val, "
                   "save the validation_errors view."))
    register(Stage("drift", drift_stage, DriftOptions,
                   "Compare train with val/test per audit property (shares per bin, chi-square test, TVD)."))


@hookimpl
def vetset_register_views(register):
    register(ViewSpec(ERRORS_VIEW, "validate", errors_view,
                      "val samples whose prediction differs from the ground truth, most confident mistakes first"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.validate import report as r

    register(ReportSection("drift", "Train vs validation drift", render_drift, order=75))
    register(ReportSection("training", "Training", r.render_training, order=80))
    register(ReportSection("validation", "Validation: train vs val", r.render_gap, order=90))
    register(ReportSection("confusion_matrix", "Confusion matrix", r.render_confusion, order=91))
    register(ReportSection("per_class_metrics", "Per-class metrics", r.render_per_class, order=92))
    register(ReportSection("validation_errors", "Most confident validation errors", r.render_errors, order=93))
    register(ReportSection("failure_slices", "Failure slices: where the model fails", render_slices, order=94))
