"""The train/validation comparison: a verdict (overfitting, underfitting or fine) with its numbers.

Definitions follow the bias/variance split of Andrew Ng, *Machine Learning Yearning*
(2018), ch. 20-23, with the optimal (Bayes) error taken as 0:

* bias = training error = ``1 - train_acc``, measured in eval mode on the train split
  without augmentation;
* variance = ``train_acc - val_acc`` (the generalisation gap).

Verdict: ``underfitting`` when ``train_acc < target_train_acc``; ``overfitting`` when
``train_acc - val_acc > overfit_gap``; when both hold, the larger of bias and variance
names the verdict (Ng, ch. 23: work on the bigger one first); otherwise ``fine``.
Thresholds are options of the ``validate`` stage; defaults are rules of thumb, documented
in :class:`GapThresholds`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GapThresholds(BaseModel):
    """Thresholds of the train/validation comparison (accuracy in 0..1).

    Attributes:
        overfit_gap: train minus val accuracy above which the model overfits. Default
            0.10 (ten points), a common rule of thumb; tighten for large val sets.
        target_train_acc: train accuracy (eval mode, no augmentation) below which the
            model underfits. Default 0.90: a model that cannot fit 90% of its own
            training images has avoidable bias for most curated datasets.
        class_recall_gap: a class is listed when its train recall exceeds its val recall
            by more than this. Default 0.20.
        min_class_support: classes with fewer val samples are not listed (one sample
            moves a recall by ``1/support``; with 5 that is 0.2). Default 5.
    """

    model_config = {"extra": "forbid"}

    overfit_gap: float = Field(0.10, ge=0, le=1)
    target_train_acc: float = Field(0.90, ge=0, le=1)
    class_recall_gap: float = Field(0.20, ge=0, le=1)
    min_class_support: int = Field(5, ge=1)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def gap_verdict(train: dict[str, Any], val: dict[str, Any], thresholds: GapThresholds | None = None,
                history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Compare train and val metrics and name the problem.

    Args:
        train: ``{"accuracy", "loss", "per_class": {class: {"recall", "support"}}}`` for
            the train split; ``source`` says how it was measured.
        val: the same for the val split.
        thresholds: :class:`GapThresholds` (defaults when ``None``).
        history: the train stage's per-epoch history, used to note a val loss that rose
            after its best epoch.

    Returns:
        ``{"verdict": "overfitting"|"underfitting"|"fine", "overfitting": bool,
        "underfitting": bool, "train_acc", "val_acc", "train_loss", "val_loss",
        "acc_gap", "loss_gap", "bias", "variance", "reasons": [sentence, ...],
        "classes_with_recall_gap": [{"class", "train_recall", "val_recall", "gap",
        "val_support"}, ...] (largest gap first), "thresholds": {...}, "summary": sentence}``.
    """
    t = thresholds or GapThresholds()
    tr_acc, va_acc = float(train["accuracy"]), float(val["accuracy"])
    tr_loss, va_loss = train.get("loss"), val.get("loss")
    bias, variance = 1.0 - tr_acc, tr_acc - va_acc
    over = variance > t.overfit_gap
    under = tr_acc < t.target_train_acc
    if over and under:
        verdict = "overfitting" if variance > bias else "underfitting"
    else:
        verdict = "overfitting" if over else "underfitting" if under else "fine"
    reasons = []
    if under:
        reasons.append(f"train accuracy {tr_acc:.3f} is below the target {t.target_train_acc:.2f}: the model does not "
                       "fit its own training images (train longer, use a larger model or pretrained weights: "
                       "stages.train.pretrained: true or stages.train.weights: FILE, "
                       "lower regularisation or augmentation strength)")
    if over:
        reasons.append(f"train accuracy {tr_acc:.3f} exceeds val accuracy {va_acc:.3f} by {variance:.3f} "
                       f"(> {t.overfit_gap:.2f}): the model memorises the train split (add data or augmentation, "
                       "regularise, stop earlier)")
    if not reasons:
        reasons.append(f"train accuracy {tr_acc:.3f} and val accuracy {va_acc:.3f} differ by {variance:.3f} "
                       f"(<= {t.overfit_gap:.2f}) and train accuracy reaches {t.target_train_acc:.2f}")
    if tr_loss is not None and va_loss is not None:
        reasons.append(f"loss: train {tr_loss:.4f}, val {va_loss:.4f} (val - train = {va_loss - tr_loss:+.4f})")
    if history:
        vals = [(h["epoch"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
        if len(vals) >= 2:
            best_ep, best = min(vals, key=lambda v: v[1])
            last_ep, last = vals[-1]
            if last_ep != best_ep and last > best * 1.1:
                reasons.append(f"val loss rose from {best:.4f} (epoch {best_ep}) to {last:.4f} (epoch {last_ep}); "
                               "the checkpoint kept is the best epoch")
    classes = []
    tr_pc, va_pc = train.get("per_class", {}), val.get("per_class", {})
    for cls, v in va_pc.items():
        tr_c = tr_pc.get(cls)
        if not tr_c or tr_c.get("support", 0) == 0 or v.get("support", 0) < t.min_class_support:
            continue
        gap = float(tr_c["recall"]) - float(v["recall"])
        if gap > t.class_recall_gap:
            classes.append({"class": cls, "train_recall": _r(tr_c["recall"]), "val_recall": _r(v["recall"]),
                            "gap": _r(gap), "val_support": int(v["support"])})
    classes.sort(key=lambda c: -c["gap"])
    summary = f"{verdict}: train acc {tr_acc:.3f} vs val acc {va_acc:.3f} (gap {variance:+.3f})"
    if tr_loss is not None and va_loss is not None:
        summary += f", train loss {tr_loss:.3f} vs val loss {va_loss:.3f}"
    if classes:
        summary += "; val recall far below train recall for " + ", ".join(c["class"] for c in classes[:5])
    return {
        "verdict": verdict, "overfitting": over, "underfitting": under,
        "train_acc": _r(tr_acc), "val_acc": _r(va_acc), "train_loss": _r(tr_loss), "val_loss": _r(va_loss),
        "acc_gap": _r(variance), "loss_gap": _r(va_loss - tr_loss) if tr_loss is not None and va_loss is not None else None,
        "bias": _r(bias), "variance": _r(variance), "train_source": train.get("source"),
        "reasons": reasons, "classes_with_recall_gap": classes, "thresholds": t.model_dump(), "summary": summary,
    }


def split_metrics(results: Any, classes: list[str], loss: float | None) -> dict[str, Any]:
    """JSON block of one split from FiftyOne's ``ClassificationResults``.

    Args:
        results: what ``evaluate_classifications`` returned.
        classes: class order of the confusion matrix.
        loss: mean cross-entropy (nats) of the split's logits against ground truth.

    Returns:
        ``{"num_samples", "accuracy", "loss", "macro": {precision, recall, f1},
        "weighted": {...}, "per_class": {class: {precision, recall, f1, support}},
        "confusion_matrix": {"classes": [...], "matrix": [[int]] (rows = ground truth,
        columns = prediction)}}``.
    """
    report = results.report(classes=classes)
    per_class = {c: {"precision": _r(report[c]["precision"]), "recall": _r(report[c]["recall"]),
                     "f1": _r(report[c]["f1-score"]), "support": int(report[c]["support"])}
                 for c in classes if c in report}
    avg = {name: {"precision": _r(report[key]["precision"]), "recall": _r(report[key]["recall"]),
                  "f1": _r(report[key]["f1-score"])}
           for name, key in (("macro", "macro avg"), ("weighted", "weighted avg")) if key in report}
    matrix = results.confusion_matrix(classes=classes)
    return {"num_samples": int(len(results.ytrue)), "accuracy": _r(results.metrics()["accuracy"]), "loss": _r(loss),
            **avg, "per_class": per_class,
            "confusion_matrix": {"classes": list(classes), "matrix": [[int(v) for v in row] for row in matrix]}}
