"""Benchmark: vetset's trainer vs a plain PyTorch loop, same timm model, batch size and files.

All in one process run, on the same image files, the same device and thread settings:

* ``model only``   -- the compute ceiling: one pre-made batch, forward + backward + AdamW
  step, no data loading at all;
* ``plain loop``   -- what a user writes: a torchvision-style ``Dataset`` (PIL open,
  ``Resize`` + ``RandomCrop`` + ``ToTensor`` + ``Normalize``), a ``DataLoader`` with the same
  number of workers (default ``fork`` start), ``timm.create_model``, AdamW, cross-entropy,
  bfloat16 autocast and channels-last on CUDA;
* ``vetset fit``   -- :func:`vetset.plugins.train.stage.fit` with no val split: safe decode
  (EXIF, palette, 16-bit), albumentations, seeded per-sample augmentation, timm's optimizer,
  cosine schedule, label smoothing, metrics, checkpoints off.
* ``vetset fine-tune`` -- the same from a weights file (a safetensors state dict of the same
  architecture, as pretrained weights are): the fine-tuning path, with the backbone at
  ``backbone_lr_scale`` 0.1 in its own parameter groups and the tag's preprocessing
  (``crop_pct``); its first epoch trains the classifier only (``head_epochs`` 1) and, like
  every first epoch here, is not counted.

Images/s are training images per wall-clock second of an epoch, data loading included,
averaged over the epochs after the first (the first warms up workers and kernels).
Target (issue 4): ``vetset fit`` within 10% of ``plain loop``; ``plain loop`` near
``model only`` means data loading is not the bottleneck. On a shared machine absolute
numbers are noisy; the ratios of one run less so.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--data cifar10|hymenoptera|DIR] [--images 2000]
        [--model resnet10t] [--img-size 32] [--batch-size 64] [--workers 2] [--threads N] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("VETSET_BENCH_CACHE", Path(tempfile.gettempdir()) / "vetset-bench-data"))


def image_folder(name: str) -> Path:
    """An ImageFolder root: a folder given as is, or a shared archive unpacked once into a cache."""
    if Path(name).is_dir():
        return Path(name)
    archives = {"cifar10": (SHARED / "cifar10" / "test.tar.gz", "test"),
                "cifar10-train": (SHARED / "cifar10" / "train.tar.gz", "train"),
                "hymenoptera": (SHARED / "hymenoptera.tar", "hymenoptera_data/train")}
    if name not in archives:
        sys.exit(f"--data {name!r}: not a folder nor one of {', '.join(archives)}.")
    archive, sub = archives[name]
    if not archive.exists():
        sys.exit(f"{archive} is absent; pass --data with an ImageFolder tree.")
    dest = CACHE / archive.name.split(".")[0]
    if not (dest / ".unpacked").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        (dest / ".unpacked").touch()
    return dest / sub


def balanced_items(root: Path, n: int) -> tuple[list[tuple[str, int]], list[str]]:
    """About ``n`` files, the same number from each class folder (first files by name)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    per = max(1, n // len(classes))
    items = []
    for i, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.is_file())[:per]
        items += [(str(f), i) for f in files]
    return items, classes


class PlainDataset:
    """torchvision-style dataset: PIL decode, Resize, RandomCrop, ToTensor, Normalize."""

    def __init__(self, items, size, mean, std):
        from torchvision import transforms as T

        self.items = items
        self.tf = T.Compose([T.Resize(size), T.RandomCrop(size, pad_if_needed=True), T.ToTensor(),
                             T.Normalize(mean, std)])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        path, y = self.items[i]
        with Image.open(path) as img:
            return self.tf(img.convert("RGB")), y


def model_only(args, k, device, amp_dtype) -> float:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=k).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, k, (args.batch_size,), device=device)
    steps = max(5, args.images // args.batch_size)
    times = []
    for i in range(steps * 2):
        if i == steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
    return steps * args.batch_size / times[0]


def plain_loop(args, items, k, device, amp_dtype) -> float:
    import timm
    import torch
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=k).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    cfg = resolve_data_config(model=model)
    ds = PlainDataset(items, args.img_size, cfg["mean"], cfg["std"])
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0, pin_memory=device.type == "cuda",
                                         drop_last=len(ds) % args.batch_size == 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rates = []
    for _epoch in range(args.epochs):
        model.train()
        t0, n = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    return sum(rates[1:]) / len(rates[1:])


def vetset_fit(args, items, classes, weights: str | None = None) -> tuple[float, str, str | None]:
    from vetset.plugins.train.stage import fit

    extra = {"weights": weights, "head_epochs": 1} if weights else {}
    out = fit(items, [], classes, {"model_name": args.model, "img_size": args.img_size, "batch_size": args.batch_size,
                                   "epochs": args.epochs, "workers": args.workers, "threads": args.threads,
                                   "warmup_epochs": 0, **extra}, log=lambda m: None)
    if weights:
        assert out.weights["source"] == "file" and out.finetune["backbone_lr_scale"] == 0.1, out.finetune
    rates = [h["images_per_s"] for h in out.history[1:]]
    return sum(rates) / len(rates), out.device, out.amp_dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="cifar10", help="cifar10 (test files), cifar10-train, hymenoptera or a folder")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up and not counted")
    args = parser.parse_args()
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2 (the first is a warm-up).")

    import torch

    from vetset.plugins.train.data import resolve_amp, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    amp_dtype = resolve_amp("auto", device)
    items, classes = balanced_items(image_folder(args.data), args.images)
    print(f"{len(items)} images of {len(classes)} classes from {args.data}; {args.model} at {args.img_size}px, "
          f"batch {args.batch_size}, {args.workers} workers, {torch.get_num_threads()} threads, device {device}, "
          f"amp {amp_dtype}, {args.epochs} epochs (first not counted)")
    rows = [("model only (no data loading)", model_only(args, len(classes), device, amp_dtype))]
    rows.append(("plain loop (torchvision + DataLoader)", plain_loop(args, items, len(classes), device, amp_dtype)))
    fit_rate, dev, amp = vetset_fit(args, items, classes)
    rows.append((f"vetset fit ({dev}, amp {amp})", fit_rate))
    import timm
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "weights.safetensors")
        save_file({k: v.contiguous() for k, v in timm.create_model(args.model).state_dict().items()}, weights)
        tune_rate, _, _ = vetset_fit(args, items, classes, weights)
    rows.append(("vetset fine-tune (weights file)", tune_rate))
    plain = rows[1][1]
    print(f"\n| {'loop':<40} | {'images/s':>9} | {'vs plain loop':>13} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 15}|")
    for name, rate in rows:
        print(f"| {name:<40} | {rate:>9.1f} | {rate / plain:>12.2f}x |")
    for name, rate in (("vetset fit", fit_rate), ("vetset fine-tune", tune_rate)):
        ratio = rate / plain
        print(f"{name} / plain loop = {ratio:.3f} (target >= 0.90): {'met' if ratio >= 0.9 else 'NOT met'}")


if __name__ == "__main__":
    main()
