"""Label-noise detection on real human label noise: CIFAR-10N, cleanlab vs the argmax baseline.

Data: ``../shared/data/cifar10`` (or ``$VETSET_SHARED_DATA/cifar10``): the CIFAR-10 train
files as 32x32 JPEGs and ``cifar10n_train_labels.csv`` (Wei et al., ICLR 2022). A seeded,
class-balanced subset (by the clean label) gets one human label set as its given labels:
``random1`` (17.2% wrong), ``aggre`` (9.0%) or ``worse`` (40.2%). The truth is
``noisy != clean``.

For each label set the script computes out-of-fold ``pred_probs`` with vetset's own
K-fold path (:func:`vetset.plugins.label_noise_oof.kfold_pred_probs`, i.e. the timm trainer's
``fit``/``predict``), then prints:

* subset size, wall time, out-of-fold accuracy against the clean and the given labels;
* precision, recall and F1 of the set flagged by ``cleanlab.filter.find_label_issues``
  (default ``filter_by``) beside the baseline "out-of-fold argmax differs from the given
  label" on the same ``pred_probs``, and every other ``filter_by`` as well;
* with ``--test-errors``: the CIFAR-10 test set scored by the mean of the fold models, and
  how many of the 54 known test-set label errors (Northcutt et al. 2021,
  ``cifar10_test_label_errors.csv``) rank in the worst 1% by label quality (chance: 0.54).

Run ``python benchmarks/label_noise_cifar10n.py`` (defaults sized for 2 CPU cores in under
15 minutes); ``--size``/``--epochs`` trace the curve; ``--label-sets random1,aggre,worse``.
Figures vary with CPU contention; the comparisons inside one run share the same pred_probs.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("VETSET_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data")) / "cifar10"
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")


def unpack(work: Path, name: str) -> Path:
    """Unpack ``<shared>/cifar10/<name>.tar.gz`` into ``work`` once; returns ``work``."""
    marker = work / f".{name}-unpacked"
    if not marker.exists():
        work.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / f"{name}.tar.gz") as tar:
            tar.extractall(work, filter="data")
        marker.touch()
    return work


def subset(rows: list[dict], size: int, seed: int) -> list[dict]:
    """``size // 10`` rows per clean class, seeded."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["clean"], []).append(r)
    out = []
    for c in sorted(by):
        idx = rng.permutation(len(by[c]))[: size // len(by)]
        out.extend(by[c][i] for i in sorted(idx))
    return out


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of a boolean flag vector against boolean truth."""
    tp = float((flagged & truth).sum())
    p = tp / flagged.sum() if flagged.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def train_transform(img_size: int, pad: int) -> dict | None:
    """Flip + random shift by up to ``pad`` px with reflected borders (the standard CIFAR
    augmentation, pad-and-crop, He et al. 2016) in ``A.to_dict`` format."""
    if pad < 0:
        return None
    import albumentations as A
    import cv2

    steps = [A.HorizontalFlip(p=0.5)]
    if pad:
        steps.append(A.Affine(translate_px={"x": (-pad, pad), "y": (-pad, pad)}, border_mode=cv2.BORDER_REFLECT_101,
                              p=1.0))
    return A.to_dict(A.Compose(steps))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=5000, help="subset size (class-balanced by the clean label)")
    ap.add_argument("--label-sets", default="random1", help="comma-separated: random1, aggre, worse, random2...")
    ap.add_argument("--model", default="test_resnet", help="timm model name")
    ap.add_argument("--img-size", type=int, default=64, help="model input side (CIFAR files are 32 px)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--pad", type=int, default=8, help="reflect padding before the random crop; -1: no augmentation")
    ap.add_argument("--filter-by", default="prune_by_noise_rate", choices=FILTERS, help="the filter reported as cleanlab")
    ap.add_argument("--test-errors", action="store_true", help="also score the CIFAR-10 test set (54 known errors)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vetset-bench-cifar10")
    args = ap.parse_args(argv)

    if not (SHARED / "train.tar.gz").exists():
        print(f"skipped: {SHARED}/train.tar.gz is absent (shared data is only in the project's checkouts)")
        return 0
    from vetset.plugins.label_noise import find_issues
    from vetset.plugins.label_noise_oof import kfold_pred_probs
    from vetset.plugins.label_noise_options import LabelNoiseOptions
    from vetset.plugins.train import predict

    work = unpack(args.work, "train")
    with open(SHARED / "cifar10n_train_labels.csv", newline="") as f:
        rows = subset(list(csv.DictReader(f)), args.size, args.seed)
    classes = sorted({r["clean"] for r in rows})
    fps = [str(work / r["filepath"]) for r in rows]
    clean = np.array([classes.index(r["clean"]) for r in rows])
    train_opts = {"model_name": args.model, "img_size": args.img_size, "epochs": args.epochs,
                  "batch_size": args.batch_size, "lr": args.lr, "label_smoothing": args.label_smoothing,
                  "warmup_epochs": 1, "train_transform": train_transform(args.img_size, args.pad),
                  "device": args.device, "workers": args.workers, "seed": args.seed}
    test = None
    if args.test_errors:
        unpack(args.work, "test")
        test_fps = sorted(str(p) for p in (args.work / "test").glob("*/*.jpg"))
        with open(SHARED / "cifar10_test_label_errors.csv", newline="") as f:
            known = {str(args.work / r["filepath"]) for r in csv.DictReader(f)}
        test = {"fps": test_fps, "labels": np.array([classes.index(Path(p).parent.name) for p in test_fps]),
                "known": np.array([p in known for p in test_fps])}
    print(f"CIFAR-10N label noise: {len(rows)} train files, model {args.model} at {args.img_size} px, "
          f"{args.folds} folds x {args.epochs} epochs, augmentation {'off' if args.pad < 0 else f'flip+pad{args.pad}+crop'}, "
          f"device {args.device}, torch threads {__import__('torch').get_num_threads()}")
    summary, details = [], []
    for label_set in [s.strip() for s in args.label_sets.split(",") if s.strip()]:
        given = np.array([classes.index(r[label_set]) for r in rows])
        truth = given != clean
        test_probs = []

        def score_test(fold, out, opts):
            if test is not None:
                test_probs.append(predict(out.model, test["fps"], out.data_config, opts)[0])

        t0 = time.perf_counter()
        def log(msg: str) -> None:  # fold starts go to stderr, with the time since the label set began
            if msg.startswith("[label_noise] fold"):
                print(f"{time.perf_counter() - t0:7.0f} s  {label_set}: {msg}", file=sys.stderr, flush=True)

        pred_probs, folds = kfold_pred_probs(fps, given, classes, train_opts, args.folds, args.seed,
                                             log=log, on_fold=score_test)
        seconds = time.perf_counter() - t0
        pred = pred_probs.argmax(1)
        base = prf(pred != given, truth)
        row = {"label_set": label_set, "noise": truth.mean(), "size": len(rows), "seconds": seconds,
               "oof_acc_clean": (pred == clean).mean(), "oof_acc_given": (pred == given).mean()}
        for fb in FILTERS:
            is_issue, _, _ = find_issues(given, pred_probs, LabelNoiseOptions(filter_by=fb))
            p, r, f1 = prf(is_issue, truth)
            details.append((label_set, fb, int(is_issue.sum()), p, r, f1, f1 - base[2]))
            if fb == args.filter_by:
                row.update(flagged=int(is_issue.sum()), p=p, r=r, f1=f1)
        row.update(bp=base[0], br=base[1], bf1=base[2])
        if test is not None:
            tp = np.mean(test_probs, axis=0)
            _, quality, _ = find_issues(test["labels"], tp, LabelNoiseOptions())
            worst = np.argsort(quality, kind="stable")[: len(quality) // 100]
            row["test_acc"] = (tp.argmax(1) == test["labels"]).mean()
            row["test_hits"] = int(test["known"][worst].sum())
        summary.append(row)

    print("\nper label set (cleanlab = find_label_issues(filter_by=%r); baseline = argmax != given)" % args.filter_by)
    head = (f"{'labels':8} {'noise':>6} {'size':>6} {'time s':>7} {'oof acc clean':>13} {'oof acc given':>13} "
            f"{'flagged':>7} {'P':>5} {'R':>5} {'F1':>5} | {'base P':>6} {'base R':>6} {'base F1':>7} {'dF1':>6}")
    print(head + (f" | {'test acc':>8} {'known errs in worst 1%':>22}" if test is not None else ""))
    for r in summary:
        line = (f"{r['label_set']:8} {r['noise']:6.3f} {r['size']:6d} {r['seconds']:7.0f} {r['oof_acc_clean']:13.3f} "
                f"{r['oof_acc_given']:13.3f} {r['flagged']:7d} {r['p']:5.2f} {r['r']:5.2f} {r['f1']:5.2f} | "
                f"{r['bp']:6.2f} {r['br']:6.2f} {r['bf1']:7.2f} {r['f1'] - r['bf1']:+6.2f}")
        if test is not None:
            line += f" | {r['test_acc']:8.3f} {r['test_hits']:>14d} of 54"
        print(line)
    print("\nevery cleanlab filter_by on the same pred_probs")
    print(f"{'labels':8} {'filter_by':22} {'flagged':>7} {'P':>5} {'R':>5} {'F1':>5} {'F1 - baseline':>13}")
    for ls, fb, n, p, r, f1, d in details:
        print(f"{ls:8} {fb:22} {n:7d} {p:5.2f} {r:5.2f} {f1:5.2f} {d:+13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
