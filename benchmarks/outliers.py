"""Benchmark: images of another domain planted into a dataset, found by outlier scores on embed-stage features.

Data, built at run time, four cases: ``--originals`` CIFAR-10 *train* files (a seeded
class-balanced choice) with 50 planted ants/bees photos (``../shared/data/hymenoptera.tar``,
real photos of many sizes) or 50 of scikit-learn's 8x8 handwritten digits (upscaled to 32x32
RGB); and the reverse direction: the 397 ants/bees photos (train + val) with 50 CIFAR-10 train
files or 50 digits planted. The planted images get random given labels among the dataset's
classes (foreign files strewn over the class folders), or all one label (``one class``: a
foreign folder merged into one class); one case also gives 10% of the originals a wrong label
(label noise should not pass for outliers).

Features come from the backbone vetset trained on the CIFAR-10 *test* files (``_backbone.py``),
through the embed stage's code (flip-invariant). Scores, side by side on the same features:

* kNN: mean cosine distance of centred features to the k nearest neighbours (k = 10 and
  100), the statistic of cleanlab's ``OutOfDistribution`` and Datalab's outlier manager;
  cleanlab's ``OutOfDistribution`` itself (k = 10) beside it;
* class-conditional Mahalanobis distance (Lee et al., NeurIPS 2018): class means from the
  given labels, one shared Ledoit-Wolf covariance; distance to the nearest class mean or to
  the given label's mean; and, as a reference no user can have, fitted on the originals only
  (the planted images left out of the means and the covariance);
* distance to the nearest class centre, or to the given class's: squared Euclidean on the
  raw features (Lee et al. with the identity for covariance), and cosine on centred unit
  features.

Printed per case: AUROC (planted vs originals), precision at 50 (planted among the 50 highest
scores), and the images Datalab's fence (Q3 + 1.7 IQR) flags with their precision and recall.

Usage::

    .venv/bin/python benchmarks/outliers.py [--originals 2000] [--planted 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.astype(int), scores))


def hymenoptera_items() -> list[tuple[str, int]]:
    """The ants/bees photos, train and val: ``(path, 0 ants / 1 bees)``."""
    from train_throughput import image_folder

    root = image_folder("hymenoptera").parent
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name in ("ants", "bees"))
    return [(str(p), int(p.parent.name == "bees")) for p in files]


def planted_images(domain: str, count: int, seed: int, dest: Path) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if domain == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        out = []
        for k, i in enumerate(rng.choice(len(digits.images), size=count, replace=False)):
            arr = (digits.images[i] * (255 / 16)).astype(np.uint8)
            path = dest / f"digit_{k:03d}.png"
            Image.fromarray(arr).convert("RGB").resize((32, 32), Image.NEAREST).save(path)
            out.append(str(path))
        return out
    if domain == "cifar10":
        from train_throughput import balanced_items, image_folder

        pool, _ = balanced_items(image_folder("cifar10-train"), 50_000)
        return [pool[i][0] for i in sorted(rng.choice(len(pool), size=count, replace=False))]
    files = [p for p, _y in hymenoptera_items() if not p.endswith(".gif")]
    return [files[i] for i in sorted(rng.choice(len(files), size=count, replace=False))]


def scores(feats: np.ndarray, labels: np.ndarray, n_orig: int) -> list[tuple[str, np.ndarray, float]]:
    """``(name, score, seconds)`` for each method compared; higher = more unusual."""
    from cleanlab.outlier import OutOfDistribution

    from vetset.plugins.embed.class_distance import centroid_scores, mahalanobis_scores
    from vetset.plugins.embed.neighbours import knn, outlier_scores, unit_rows

    out = []
    unit = unit_rows(feats)
    t0 = time.perf_counter()
    sim, _idx = knn(unit, 100)
    t_knn = time.perf_counter() - t0
    for k in (10, 100):
        out.append((f"kNN cosine, k={k}", outlier_scores(sim, k), t_knn))
    t0 = time.perf_counter()
    cl = 1.0 - OutOfDistribution(params={"k": 10}).fit_score(features=unit)  # cleanlab: lower = more atypical
    out.append(("cleanlab OutOfDistribution, k=10", cl, time.perf_counter() - t0))
    for name, fn, x, y, mode in (
            ("Mahalanobis (Lee), nearest class", mahalanobis_scores, feats, labels, "nearest"),
            ("Mahalanobis (Lee), given class", mahalanobis_scores, feats, labels, "given"),
            ("[ref] Mahalanobis fit on originals", None, feats, labels, "nearest"),
            ("class mean Euclidean, nearest class", "euclidean", feats, labels, "nearest"),
            ("class mean Euclidean, given class", "euclidean", feats, labels, "given"),
            ("centroid cosine, nearest class", "cosine", unit, labels, "nearest"),
            ("centroid cosine, given class", "cosine", unit, labels, "given")):
        t0 = time.perf_counter()
        if fn is None:  # not available in practice: which images are foreign is what we look for
            s = mahalanobis_scores(x, np.where(np.arange(len(y)) < n_orig, y, -1), mode)
        elif isinstance(fn, str):
            s = centroid_scores(x, y, mode, metric=fn)
        else:
            s = fn(x, y, mode)
        out.append((name, s, time.perf_counter() - t0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=2000, help="CIFAR-10 train files in the CIFAR cases")
    parser.add_argument("--planted", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the backbone trained on CIFAR-10 test "
                        "files (default: _backbone.py's)")
    parser.add_argument("--per-class", type=int, default=None, help="CIFAR-10 test files per class the backbone "
                        "trains on (default: _backbone.py's)")
    args = parser.parse_args()

    import _backbone
    from train_throughput import balanced_items, image_folder

    from vetset.plugins.embed.backbone import load_backbone_file
    from vetset.plugins.embed.compute import embed_batches
    from vetset.plugins.embed.neighbours import outlier_fence

    t_start = time.perf_counter()
    per_class = args.per_class or _backbone.PER_CLASS
    ckpt = _backbone.cifar_test_backbone(epochs=args.epochs or _backbone.EPOCHS, per_class=per_class)
    backbone = load_backbone_file(ckpt, None)
    pool, _ = balanced_items(image_folder("cifar10-train"), 50_000)
    rng = np.random.default_rng(args.seed)
    cifar = [pool[i] for i in sorted(rng.choice(len(pool), size=args.originals, replace=False))]
    ants_bees = [it for it in hymenoptera_items() if not it[0].endswith(".gif")]
    print(f"backbone {backbone.model_name} trained by vetset on {per_class * 10} CIFAR-10 test files ({ckpt}), "
          f"flip-invariant features; {args.planted} planted images per case; "
          f"load average {os.getloadavg()[0]:.1f} at start\n")
    head = (f"| {'dataset + planted (labels)':<37} | {'score':<36} | {'AUROC':>6} | {'prec@50':>7} | {'flagged':>7} | "
            f"{'flag prec':>9} | {'flag recall':>11} | {'s':>5} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    cases = (("CIFAR-10", cifar, 10, "hymenoptera", "random"), ("CIFAR-10", cifar, 10, "hymenoptera", "one class"),
             ("CIFAR-10", cifar, 10, "digits", "random"), ("CIFAR-10", cifar, 10, "digits", "one class"),
             ("CIFAR-10", cifar, 10, "digits", "random, 10% wrong"),
             ("ants/bees", ants_bees, 2, "cifar10", "random"), ("ants/bees", ants_bees, 2, "digits", "random"))
    cache: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, items, n_classes, domain, how in cases:
            planted = planted_images(domain, args.planted, args.seed, Path(tmp))
            paths = [p for p, _y in items] + planted
            given = rng.integers(0, n_classes, len(planted)) if how == "random" else np.ones(len(planted), np.int64)
            labels = np.array([y for _p, y in items] + given.tolist())
            if "wrong" in how:  # 10% of the originals get another class: label noise must not pass for outliers
                wrong = rng.choice(len(items), size=len(items) // 10, replace=False)
                labels[wrong] = (labels[wrong] + rng.integers(1, n_classes, len(wrong))) % n_classes
            if (dataset, domain) not in cache:
                cache[dataset, domain] = np.concatenate(
                    [f for _s, f, _ok in embed_batches(backbone, paths, 64, flip=True, device="cpu")])
            feats = cache[dataset, domain]
            positive = np.arange(len(paths)) >= len(items)
            case = f"{dataset} + {domain} ({how})"
            for name, s, secs in scores(feats, labels, len(items)):
                top = np.argsort(-s, kind="stable")[: args.planted]
                flag = s > outlier_fence(s)
                fp = f"{positive[flag].mean():.2f}" if flag.any() else "-"
                print(f"| {case:<37} | {name:<36} | {auroc(s, positive):>6.3f} | "
                      f"{positive[top].mean():>7.2f} | {int(flag.sum()):>7} | {fp:>9} | "
                      f"{(flag & positive).sum() / positive.sum():>11.2f} | {secs:>5.2f} |")
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
