"""Benchmark: images of another domain planted into a dataset, found by the embed stage's outlier score.

Data, built at run time: ``--originals`` CIFAR-10 *train* files (a seeded class-balanced
choice) and 50 images of another domain, in two runs: the ants/bees photos
(``../shared/data/hymenoptera.tar``, real photos of many sizes) and scikit-learn's 8x8
handwritten digits (upscaled to 32x32 RGB).

Features come from the backbone vetset trained on the CIFAR-10 *test* files
(``_backbone.py``), through the embed stage's code; the score is the stage's (mean cosine
distance of centred features to the 10 nearest neighbours) beside cleanlab's
``OutOfDistribution`` feature score on the same features. Printed per planted domain:
AUROC (planted vs originals), precision at 50 (planted among the 50 highest scores) and
the images the stage flags (Datalab's fence) with their precision and recall.

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
    from train_throughput import image_folder

    root = image_folder("hymenoptera")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    return [str(files[i]) for i in sorted(rng.choice(len(files), size=count, replace=False))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=2000)
    parser.add_argument("--planted", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the backbone trained on CIFAR-10 test files")
    parser.add_argument("--per-class", type=int, default=300, help="CIFAR-10 test files per class the backbone trains on")
    args = parser.parse_args()

    from _backbone import cifar_test_backbone
    from cleanlab.outlier import OutOfDistribution
    from train_throughput import balanced_items, image_folder

    from vetset.plugins.embed.backbone import load_backbone_file
    from vetset.plugins.embed.compute import embed_batches
    from vetset.plugins.embed.neighbours import knn, outlier_fence, outlier_scores, unit_rows

    t_start = time.perf_counter()
    ckpt = cifar_test_backbone(epochs=args.epochs, per_class=args.per_class)
    backbone = load_backbone_file(ckpt, None)
    pool, _ = balanced_items(image_folder("cifar10-train"), 50_000)
    rng = np.random.default_rng(args.seed)
    originals = [pool[i][0] for i in sorted(rng.choice(len(pool), size=args.originals, replace=False))]
    print(f"{len(originals)} CIFAR-10 train images + {args.planted} planted images of another domain; backbone "
          f"{backbone.model_name} trained by vetset on {args.per_class * 10} CIFAR-10 test files ({ckpt}), flip-invariant features\n")
    head = (f"| {'planted domain':<16} | {'score':<34} | {'AUROC':>6} | {'precision@50':>12} | {'flagged':>7} | "
            f"{'flag precision':>14} | {'flag recall':>11} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for domain in ("hymenoptera", "digits"):
            planted = planted_images(domain, args.planted, args.seed, Path(tmp))
            paths = originals + planted
            feats = np.concatenate([f for _s, f, _ok in embed_batches(backbone, paths, 64, flip=True, device="cpu")])
            positive = np.arange(len(paths)) >= len(originals)
            unit = unit_rows(feats)
            sim, _idx = knn(unit, 10)
            ours = outlier_scores(sim, 10)
            fence = outlier_fence(ours)
            cl = 1.0 - OutOfDistribution(params={"k": 10}).fit_score(features=unit)  # cleanlab: lower = more atypical
            for name, s, flag in (("embed stage (kNN cosine, k=10)", ours, ours > fence),
                                  ("cleanlab OutOfDistribution (k=10)", cl, None)):
                top = np.argsort(-s, kind="stable")[: args.planted]
                p50 = positive[top].mean()
                flagged = "-" if flag is None else f"{int(flag.sum())}"
                fp = "-" if flag is None or not flag.any() else f"{positive[flag].mean():.2f}"
                fr = "-" if flag is None else f"{(flag & positive).sum() / positive.sum():.2f}"
                print(f"| {domain:<16} | {name:<34} | {auroc(s, positive):>6.3f} | {p50:>12.2f} | {flagged:>7} | "
                      f"{fp:>14} | {fr:>11} |")
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
