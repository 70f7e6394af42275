"""A backbone for the embedding benchmarks, trained by vetset on images the benchmarks never score.

No pretrained weights can be downloaded here, so the benchmarks embed CIFAR-10 *train*
files with a timm model that vetset's own trainer (:func:`vetset.plugins.train.loop.fit`)
fitted on the 10,000 CIFAR-10 *test* files: disjoint images, and none of the train labels.
The checkpoint is cached under ``$VETSET_BENCH_CACHE/backbones`` and reused by later runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_cifar10 import CIFAR_AUG  # noqa: E402
from train_throughput import CACHE, balanced_items, image_folder  # noqa: E402

#: The benchmarks' default backbone: resnet10t, 32 px, all 10,000 CIFAR-10 test files, 10 epochs.
EPOCHS = 10
PER_CLASS = 1000


def cifar_test_backbone(model: str = "resnet10t", epochs: int = EPOCHS, per_class: int = PER_CLASS, img_size: int = 32,
                        log=print) -> Path:
    """``best.pt`` of ``model`` trained on ``per_class`` CIFAR-10 test files per class (trained once, then cached).

    Training: ``img_size`` px, AdamW lr 2e-3, batch 64, cosine schedule, CIFAR augmentation
    (pad 4, random crop, horizontal flip; He et al. 2016), CPU: 100,000 image passes with the
    defaults (about 3 minutes on 2 idle cores, at about 550 images/s; several times that on a
    shared machine).
    """
    from vetset.plugins.train.loop import fit

    out = CACHE / "backbones" / f"cifar10-test-{model}-{img_size}px-{per_class}pc-{epochs}ep"
    best = out / "best.pt"
    if best.is_file():
        return best
    items, classes = balanced_items(image_folder("cifar10"), per_class * 10)
    log(f"training the benchmark backbone: {model} on {len(items)} CIFAR-10 test files, {epochs} epochs "
        f"(cached in {out})")
    t0 = time.perf_counter()
    fit(items, [], classes, {"model_name": model, "img_size": img_size, "epochs": epochs, "batch_size": 64,
                             "lr": 2e-3, "train_transform": CIFAR_AUG, "device": "cpu", "workers": 0},
        out_dir=out, log=lambda m: None)
    log(f"backbone trained in {time.perf_counter() - t0:.0f} s")
    return best


if __name__ == "__main__":
    print(cifar_test_backbone())
