"""Model against model on the same validation images: paired bootstrap intervals and a verdict.

Both models predict the same val images, so their difference is measured pairwise: each
bootstrap replicate draws the images with replacement (the same draw for both models) and
recomputes accuracy and macro-F1 of each, giving the distribution of ``new - old``
(paired bootstrap resampling, P. Koehn, "Statistical significance tests for machine
translation evaluation", EMNLP 2004; percentile intervals, Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 13). The replicates are multinomial weights on
the images, so every metric is a weighted count (no Python loop per replicate).

Verdict, on the ``primary`` metric: ``better`` when the whole interval of ``new - old``
is above 0, ``worse`` when it is below 0, else ``no clear difference``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

VERDICTS = ("better", "no clear difference", "worse")


def _macro_f1(w: np.ndarray, y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 per replicate: ``w`` ``(B, n)`` weights, ``y``/``p`` ``(n,)`` class indices."""
    yh, ph = np.eye(k)[y], np.eye(k)[p]
    tp, fp, fn = w @ (yh * ph), w @ (ph * (1 - yh)), w @ (yh * (1 - ph))
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = yh.sum(0) > 0  # classes with val images (sklearn's labels=classes present in y)
    return f1[:, present].mean(1)


def paired_bootstrap(y: np.ndarray, old: np.ndarray, new: np.ndarray, k: int, n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Accuracy and macro-F1 of two models' predictions on the same images, and of their difference.

    Args:
        y: true class index per image, int array ``(n,)``.
        old, new: predicted class indices of the two models, int arrays ``(n,)``.
        k: number of classes.
        n_boot: bootstrap replicates.
        confidence: interval level.
        seed: replicate seed (the same seed gives the same intervals).

    Returns:
        ``{"n", "n_boot", "confidence", "accuracy": {"old", "new", "diff", "ci": [lo, hi]},
        "macro_f1": {...}, "fixed", "broken"}``; ``fixed``/``broken`` count images the new
        model gets right / wrong that the old one got wrong / right.
    """
    y, old, new = (np.asarray(a, dtype=np.int64) for a in (y, old, new))
    n = len(y)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    a = 1 - confidence
    out: dict[str, Any] = {"n": n, "n_boot": n_boot, "confidence": confidence}
    ok_old, ok_new = (old == y).astype(np.float64), (new == y).astype(np.float64)
    acc_old, acc_new = w @ ok_old / n, w @ ok_new / n
    f1_old, f1_new = _macro_f1(w, y, old, k), _macro_f1(w, y, new, k)
    ones = np.ones((1, n))
    for name, (bo, bn), (po, pn) in (
            ("accuracy", (acc_old, acc_new), (ok_old.mean(), ok_new.mean())),
            ("macro_f1", (f1_old, f1_new), (_macro_f1(ones, y, old, k)[0], _macro_f1(ones, y, new, k)[0]))):
        d = bn - bo
        lo, hi = np.quantile(d, [a / 2, 1 - a / 2])
        out[name] = {"old": round(float(po), 4), "new": round(float(pn), 4), "diff": round(float(pn - po), 4),
                     "ci": [round(float(lo), 4), round(float(hi), 4)]}
    out["fixed"] = int(((old != y) & (new == y)).sum())
    out["broken"] = int(((old == y) & (new != y)).sum())
    return out


def verdict(stats: dict[str, Any], primary: str = "accuracy") -> str:
    """``better`` / ``no clear difference`` / ``worse`` from the interval of ``new - old`` on ``primary``."""
    lo, hi = stats[primary]["ci"]
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"


def per_class_error(y: np.ndarray, old: np.ndarray, new: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """``{class: {"n", "old", "new"}}``: error rate of each model on each class's val images."""
    out = {}
    for i, c in enumerate(classes):
        m = y == i
        if m.any():
            out[c] = {"n": int(m.sum()), "old": round(float((old[m] != i).mean()), 4),
                      "new": round(float((new[m] != i).mean()), 4)}
    return out
