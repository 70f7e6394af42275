"""Benchmark: vetset's trainer on CIFAR-10 for a fixed time budget on 2 CPU cores.

A class-balanced subset of the CIFAR-10 train files (``../shared/data/cifar10/train.tar.gz``,
32x32 JPEGs), a small timm model at 32x32 (``resnet10t`` by default, from scratch), the
standard CIFAR augmentation (pad 4 + random 32x32 crop + horizontal flip, He et al. 2016)
as a ``train_transform``, the trainer's defaults otherwise (AdamW, cosine schedule with
warm-up, label smoothing 0.1). The number of epochs is chosen so that training fits the
budget: a calibration run measures images/s first (its time counts against the budget).
Then the model predicts the 10,000 CIFAR-10 test files and the script prints test
accuracy and images/s.

The JPEG files are lossy re-encodings of CIFAR-10 (see ``../shared/data/README.md``), so
compare the accuracy only with other numbers measured on these files.

Usage::

    .venv/bin/python benchmarks/train_cifar10.py [--budget-min 10] [--per-class 1000] [--model resnet10t]
        [--cores 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import balanced_items, image_folder  # noqa: E402

#: Pad 4 px (reflect) and flip; the trainer's random 32x32 crop follows the user pipeline.
CIFAR_AUG = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
    {"__class_fullname__": "PadIfNeeded", "p": 1.0, "min_height": 40, "min_width": 40, "border_mode": 4},
    {"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-min", type=float, default=10.0, help="training time budget in minutes")
    parser.add_argument("--per-class", type=int, default=1000, help="train images per class (5,000 available)")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores: torch threads and CPU affinity")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: decode in-process)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from vetset.plugins.train.stage import fit, predict

    try:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        pass
    torch.set_num_threads(args.cores)
    train, classes = balanced_items(image_folder("cifar10-train"), args.per_class * 10)
    test, test_classes = balanced_items(image_folder("cifar10"), 10_000)
    assert classes == test_classes
    budget = args.budget_min * 60.0
    base = {"model_name": args.model, "img_size": 32, "batch_size": args.batch_size, "lr": args.lr,
            "workers": args.workers, "train_transform": CIFAR_AUG, "device": "cpu"}

    t_start = time.perf_counter()
    calib = train[:: max(1, len(train) // 640)][:640]
    fit(calib, [], classes, dict(base, epochs=2, warmup_epochs=0), log=lambda m: None)
    calib_rate = len(calib) * 2 / (time.perf_counter() - t_start)
    left = budget - (time.perf_counter() - t_start)
    epochs = max(1, int(left * 0.95 * calib_rate / len(train)))
    print(f"{len(train)} train images ({args.per_class}/class), {args.model} at 32px, {args.cores} cores; "
          f"calibration {calib_rate:.0f} img/s -> {epochs} epochs in the {args.budget_min:g} min budget")

    t0 = time.perf_counter()
    out = fit(train, [], classes, dict(base, epochs=epochs, warmup_epochs=1 if epochs > 2 else 0))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    probs, _ = predict(out.model, [p for p, _ in test], out.data_config, {"workers": args.workers})
    test_s = time.perf_counter() - t1
    acc = float((probs.argmax(1) == np.array([c for _, c in test])).mean())
    rate = np.mean([h["images_per_s"] for h in out.history])
    total = time.perf_counter() - t_start
    print(f"\n| {'measure':<34} | {'value':>10} |")
    print(f"|{'-' * 36}|{'-' * 12}|")
    for name, value in [("epochs", f"{len(out.history)}"), ("training time (s)", f"{train_s:.0f}"),
                        ("training images/s", f"{rate:.1f}"), ("test images/s (inference)", f"{len(test) / test_s:.0f}"),
                        ("final train accuracy (running)", f"{out.history[-1]['train_acc']:.3f}"),
                        ("CIFAR-10 test accuracy (10,000)", f"{acc:.4f}"),
                        ("wall time incl. calibration (s)", f"{total:.0f}")]:
        print(f"| {name:<34} | {value:>10} |")


if __name__ == "__main__":
    main()
