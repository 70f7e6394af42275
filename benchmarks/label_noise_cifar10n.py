"""Label-noise detection on real human label noise: CIFAR-10N, cleanlab vs the argmax baseline.

Data: ``../shared/data/cifar10`` (or ``$VETSET_SHARED_DATA/cifar10``): the CIFAR-10 train
files as 32x32 JPEGs and ``cifar10n_train_labels.csv`` (Wei et al., ICLR 2022). A seeded,
class-balanced subset (by the clean label) gets one human label set as its given labels:
``random1`` (17.2% wrong), ``aggre`` (9.0%) or ``worse`` (40.2%). The truth is
``noisy != clean``.

For each label set the script computes out-of-fold ``pred_probs`` with vetset's own
K-fold path (:func:`vetset.plugins.label_noise.pred_probs.kfold_pred_probs`, i.e. the timm trainer's
``fit``/``predict``), then prints:

* subset size, wall time, out-of-fold accuracy against the clean and the given labels;
* precision, recall and F1 of the set flagged by ``cleanlab.filter.find_label_issues``
  (default ``filter_by``) beside the baseline "out-of-fold argmax differs from the given
  label" on the same ``pred_probs``, and every other ``filter_by`` as well;
* with ``--test-errors``: the CIFAR-10 test set scored by the mean of the fold models, and
  how many of the 54 known test-set label errors (Northcutt et al. 2021,
  ``cifar10_test_label_errors.csv``) rank in the worst 1% by label quality (chance: 0.54).

``--method embeddings`` (or ``kfold,embeddings``: both on the same files, one table)
computes ``pred_probs`` as the stage's ``method: embeddings`` does (flip-invariant features of
the embed stage's pass + 5-fold logistic regression), with a resnet10t vetset trained on the
CIFAR-10 test files (``_backbone.py``: disjoint images, no train labels; all 10,000 files for
10 epochs by default, ``--backbone-per-class``/``--backbone-epochs``); its wall time includes
the feature pass. Each method's row uses the stage's ``filter_by: auto`` for it; the second
table gives every filter. On a 2-core CPU shared with other jobs (load average 17) the
embeddings method gave ``random1`` out-of-fold accuracy 0.69 against the clean labels and F1
0.60 (``low_self_confidence``; 0.58 ``prune_by_noise_rate``, 0.59 ``both``) in 829 s, 449 s
of it the feature pass; ``aggre`` 0.44 (0.40, 0.41).

Run ``python benchmarks/label_noise_cifar10n.py`` (defaults sized for 2 CPU cores in under
15 minutes); ``--size``/``--epochs``/``--folds`` trace the curve; ``--label-sets
random1,aggre,worse``; ``--seeds 2`` averages two K-fold runs; ``--threads 1`` on a busy
machine. Figures vary with CPU contention; the comparisons inside one run share the same
pred_probs.

Why the defaults (20,000 files, 2 folds x 12 epochs, ``test_resnet`` at 64 px, the stage's
``light`` fold augmentation): out-of-fold accuracy drives the F1, and on a CPU the budget
is image passes. K folds over N files cost ``(K - 1) * N * epochs`` training passes and give
each fold model ``(K - 1) / K * N`` images, so 2 folds over 20,000 files train each model on
10,000 images for the price of 5 folds over 5,000 files (4,000 images each) at 12 epochs.
One fold model each, ``random1`` labels, accuracy against the clean labels of its held-out
fold: 4,000 images x 20 epochs 0.60, x 30 epochs 0.62; 6,666 x 20 0.68; 10,000 x 15 0.71 —
more images beat more epochs. The model: ``resnet10t`` at 32 px ends its stem at 8x8 px
and its last stage at 1x1 (0.51 without, 0.54 with augmentation, 4,000 x 10); the 0.37 M
parameter ``test_resnet`` upscaled to 64 px trains about as fast and reached 0.60 (4,000 x
20); ``test_byobnet`` at 64 px 0.52.

The default run on an idle 2-core machine (torch's default 2 threads, nothing else
running): ``random1`` in 546 s (9.3 min for the whole script, CIFAR-10 test scoring
included; 847 s of user CPU), out-of-fold accuracy 0.70 against the clean labels; F1 0.62
with the stage's default ``low_self_confidence`` (precision 0.56, recall 0.68; ``both``
0.61, ``prune_by_noise_rate`` 0.59) against 0.55 for the baseline (+0.07). An earlier run
gave ``aggre`` 0.48 against 0.37. The fold models, scoring the CIFAR-10 test set (accuracy
0.71), put 5 of the 54 known test-set errors in the worst 1% (chance: 0.54). On a CPU
shared with other jobs the same run took 1,786 s: use ``--threads 1`` there.
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


def train_transform(augment: str) -> dict | None:
    """The fold models' training augmentation: the stage's ``fold_augmentation`` default
    (``light``: flip + shift by up to 1/8 of the side, i.e. pad-4-and-crop at 32 px) or none."""
    from vetset.plugins.label_noise.options import light_augmentation

    return light_augmentation() if augment == "light" else None


def embedding_features(fps: list[str], epochs: int, per_class: int, batch_size: int) -> tuple[np.ndarray, str]:
    """Flip-invariant features of the stage's pass (``embed_with_backbone``, as ``method: embeddings``
    computes them), from the backbone of ``_backbone.py``; and the backbone's description."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _backbone import cifar_test_backbone

    from vetset.plugins.embed.backbone import load_backbone_file
    from vetset.plugins.label_noise.pred_probs import embed_with_backbone

    ckpt = cifar_test_backbone(epochs=epochs, per_class=per_class)
    backbone = load_backbone_file(ckpt, None)
    return embed_with_backbone(backbone, fps, batch_size, flip=True), f"{backbone.describe()}, {ckpt.parent.name}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=20000, help="subset size (class-balanced by the clean label)")
    ap.add_argument("--label-sets", default="random1", help="comma-separated: random1, aggre, worse, random2...")
    ap.add_argument("--model", default="test_resnet", help="timm model name")
    ap.add_argument("--img-size", type=int, default=64, help="model input side (CIFAR files are 32 px)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--augment", default="light", choices=("light", "none"),
                    help="fold models' training augmentation (the stage's fold_augmentation)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="K-fold runs with different seeds (fold split, init, augmentation); pred_probs are their mean")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (train option threads); default: torch's")
    ap.add_argument("--filter-by", default=None, choices=FILTERS,
                    help="the filter reported as cleanlab; default: the stage's default filter_by for each method")
    ap.add_argument("--test-errors", action="store_true", help="also score the CIFAR-10 test set (54 known errors)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--method", default="kfold",
                    help="comma-separated pred_probs sources, each measured on the same files: kfold (timm fold "
                         "models; the options above) and/or embeddings (the stage's method embeddings: flip-invariant "
                         "features of a backbone vetset trained on the CIFAR-10 test files, benchmarks/_backbone.py, "
                         "+ 5-fold logistic regression)")
    ap.add_argument("--backbone-epochs", type=int, default=10, help="epochs of the embeddings method's backbone")
    ap.add_argument("--backbone-per-class", type=int, default=1000,
                    help="CIFAR-10 test files per class the embeddings method's backbone trains on (1000: all)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=None,
                    help="folder for <label set>.npz with each seed's pred_probs and the given/clean labels")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vetset-bench-cifar10")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if not methods or set(methods) - {"kfold", "embeddings"}:
        ap.error(f"--method: kfold and/or embeddings, not {args.method!r}")
    if "kfold" not in methods and args.test_errors:
        ap.error("--test-errors scores the test set with the fold models: it needs --method kfold")

    if not (SHARED / "train.tar.gz").exists():
        print(f"skipped: {SHARED}/train.tar.gz is absent (shared data is only in the project's checkouts)")
        return 0
    from vetset.plugins.label_noise.options import LabelNoiseOptions, default_filter_by
    from vetset.plugins.label_noise.pred_probs import embedding_pred_probs, kfold_pred_probs
    from vetset.plugins.label_noise.stage import chance_agreement, find_issues, weak_model_warning
    from vetset.plugins.train.stage import predict

    work = unpack(args.work, "train")
    with open(SHARED / "cifar10n_train_labels.csv", newline="") as f:
        rows = subset(list(csv.DictReader(f)), args.size, args.seed)
    classes = sorted({r["clean"] for r in rows})
    fps = [str(work / r["filepath"]) for r in rows]
    clean = np.array([classes.index(r["clean"]) for r in rows])
    train_opts = {"model_name": args.model, "img_size": args.img_size, "epochs": args.epochs,
                  "batch_size": args.batch_size, "lr": args.lr, "label_smoothing": args.label_smoothing,
                  "warmup_epochs": 1, "train_transform": train_transform(args.augment),
                  "device": args.device, "workers": args.workers, "threads": args.threads, "seed": args.seed}
    test = None
    if args.test_errors:
        unpack(args.work, "test")
        test_fps = sorted(str(p) for p in (args.work / "test").glob("*/*.jpg"))
        with open(SHARED / "cifar10_test_label_errors.csv", newline="") as f:
            known = {str(args.work / r["filepath"]) for r in csv.DictReader(f)}
        test = {"fps": test_fps, "labels": np.array([classes.index(Path(p).parent.name) for p in test_fps]),
                "known": np.array([p in known for p in test_fps])}
    print(f"CIFAR-10N label noise: {len(rows)} train files, model {args.model} at {args.img_size} px, "
          f"{args.folds} folds x {args.epochs} epochs x {args.seeds} seed(s), augmentation {args.augment}, "
          f"device {args.device}, torch threads {args.threads or __import__('torch').get_num_threads()}")
    summary, details = [], []
    feats, feats_seconds = None, 0.0
    if "embeddings" in methods:
        print("method embeddings: flip-invariant features of a backbone trained on the CIFAR-10 test files "
              f"({args.backbone_per_class} per class, {args.backbone_epochs} epochs), 5-fold logistic regression")
    for label_set in [s.strip() for s in args.label_sets.split(",") if s.strip()]:
        given = np.array([classes.index(r[label_set]) for r in rows])
        truth = given != clean
        for method in methods:
            test_probs, speeds = [], []

            def on_fold(fold, out, opts, speeds=speeds, test_probs=test_probs):  # bound to this label set
                speeds.extend(h["images_per_s"] for h in out.history if h.get("images_per_s"))
                if test is not None:
                    test_probs.append(predict(out.model, test["fps"], out.data_config, opts)[0])

            t0 = time.perf_counter()

            # fold starts go to stderr, with the time since the label set began
            def log(msg: str, t0: float = t0, label_set: str = label_set) -> None:
                if msg.startswith("[label_noise] fold"):
                    print(f"{time.perf_counter() - t0:7.0f} s  {label_set}: {msg}", file=sys.stderr, flush=True)

            runs = []
            if method == "embeddings":
                if feats is None:  # one feature pass for every label set; its time counts for each
                    feats, described = embedding_features(fps, args.backbone_epochs, args.backbone_per_class,
                                                          args.batch_size)
                    feats_seconds = time.perf_counter() - t0
                    print(f"features: {described}; {feats_seconds:.0f} s for {len(fps)} files", flush=True)
                    t0 = time.perf_counter()
                runs.append(embedding_pred_probs(feats, given, len(classes), 5, args.seed))
            for extra in range(args.seeds if method == "kfold" else 0):
                opts = {**train_opts, "seed": args.seed + extra}
                runs.append(kfold_pred_probs(fps, given, classes, opts, args.folds, args.seed + extra, log=log,
                                             on_fold=on_fold)[0])
            pred_probs = np.mean(runs, axis=0)
            seconds = time.perf_counter() - t0 + (feats_seconds if method == "embeddings" else 0.0)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                np.savez(args.save / f"{label_set}-{method}.npz", pred_probs=np.array(runs), given=given, clean=clean,
                         filepaths=np.array([r["filepath"] for r in rows]))
            pred = pred_probs.argmax(1)
            base = prf(pred != given, truth)
            chance = chance_agreement(given, pred, len(classes))
            # the stage's auto filter: this backbone is a vetset checkpoint given as a weights file
            default_fb = args.filter_by or default_filter_by(method, "weights file")
            row = {"label_set": label_set, "method": method, "noise": truth.mean(), "size": len(rows),
                   "seconds": seconds, "oof_acc_clean": (pred == clean).mean(), "oof_acc_given": (pred == given).mean(),
                   "kappa": ((pred == given).mean() - chance) / (1 - chance), "filter_by": default_fb,
                   "img_s": float(np.median(speeds)) if speeds else float("nan")}
            for fb in FILTERS:
                is_issue, _, _ = find_issues(given, pred_probs, LabelNoiseOptions(filter_by=fb))
                p, r, f1 = prf(is_issue, truth)
                details.append((label_set, method, fb, int(is_issue.sum()), p, r, f1, f1 - base[2]))
                if fb == default_fb:
                    row.update(flagged=int(is_issue.sum()), p=p, r=r, f1=f1)
            row.update(bp=base[0], br=base[1], bf1=base[2])
            row["warned"] = weak_model_warning(row["oof_acc_given"], row["flagged"] / len(rows), chance) is not None
            if test is not None and test_probs:
                tp = np.mean(test_probs, axis=0)
                _, quality, _ = find_issues(test["labels"], tp, LabelNoiseOptions())
                worst = np.argsort(quality, kind="stable")[: len(quality) // 100]
                row["test_acc"] = (tp.argmax(1) == test["labels"]).mean()
                row["test_hits"] = int(test["known"][worst].sum())
            summary.append(row)

    print("\nper label set and method (cleanlab = find_label_issues with the stage's filter_by for the method, or "
          "--filter-by; baseline = argmax != given; kappa: Cohen's, of the out-of-sample predictions and the given "
          "labels; weak: the stage's weak-model warning fires)")
    head = (f"{'labels':8} {'method':10} {'filter_by':20} {'noise':>6} {'size':>6} {'time s':>7} {'train img/s':>11} "
            f"{'oof acc clean':>13} {'oof acc given':>13} {'kappa':>5} {'weak':>4} {'flagged':>7} {'P':>5} {'R':>5} "
            f"{'F1':>5} | {'base P':>6} {'base R':>6} {'base F1':>7} {'dF1':>6}")
    print(head + (f" | {'test acc':>8} {'known errs in worst 1%':>22}" if test is not None else ""))
    for r in summary:
        line = (f"{r['label_set']:8} {r['method']:10} {r['filter_by']:20} {r['noise']:6.3f} {r['size']:6d} "
                f"{r['seconds']:7.0f} {r['img_s']:11.0f} {r['oof_acc_clean']:13.3f} {r['oof_acc_given']:13.3f} "
                f"{r['kappa']:5.2f} {'yes' if r['warned'] else 'no':>4} {r['flagged']:7d} {r['p']:5.2f} {r['r']:5.2f} "
                f"{r['f1']:5.2f} | {r['bp']:6.2f} {r['br']:6.2f} {r['bf1']:7.2f} {r['f1'] - r['bf1']:+6.2f}")
        if "test_acc" in r:
            line += f" | {r['test_acc']:8.3f} {r['test_hits']:>14d} of 54"
        print(line)
    print("\nevery cleanlab filter_by on the same pred_probs")
    print(f"{'labels':8} {'method':10} {'filter_by':22} {'flagged':>7} {'P':>5} {'R':>5} {'F1':>5} {'F1 - baseline':>13}")
    for ls, m, fb, n, p, r, f1, d in details:
        print(f"{ls:8} {m:10} {fb:22} {n:7d} {p:5.2f} {r:5.2f} {f1:5.2f} {d:+13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
