"""Benchmark: transfer learning, from scratch vs a reused backbone, linear probe vs full fine-tune.

Two target tasks from ``../shared/data`` (or ``$VETSET_SHARED_DATA``):

* ``ants/bees``: the PyTorch transfer-learning tutorial's photos (245 train / 153 val);
* ``cifar-test``: a CIFAR-10 task made of *test* files only (``--cifar-train`` per class to
  train on, ``--cifar-val`` per class to validate on).

Rows, each run with ``--seeds`` seeds (median and range printed):

* ``scratch``: random initialisation, every layer trained;
* ``ckpt probe`` / ``ckpt fine-tune``: the backbone of a vetset checkpoint trained on *other*
  images (``--source-per-class`` CIFAR-10 *train* files per class, trained once here;
  a real, offline stand-in for downloaded weights), reused through ``stages.train.weights``
  with ``finetune: linear_probe`` / ``full`` (defaults: one classifier-only epoch, backbone
  at 0.1 x lr);
* ``imagenet probe`` / ``imagenet fine-tune``: ``pretrained: true`` for ``--imagenet-model``
  when its weights are cached or the Hub answers (skipped otherwise; the table says which
  rows ran).

Everything runs at ``--img-size`` (default 64 for ants/bees; CIFAR at 32) on the CPU
threads given, so the default run stays near 10-15 minutes on 2 cores. Wall time is the
whole ``fit`` call (model build, feature pass of the probe, every epoch, validation).

    .venv/bin/python benchmarks/transfer.py [--seeds 3] [--epochs 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("VETSET_BENCH_CACHE", Path(tempfile.gettempdir()) / "vetset-bench-data"))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _extract(archive: Path, dest: Path, want) -> None:
    """Extract the members ``want(name)`` accepts (once; a marker file records it)."""
    marker = dest / f".{archive.name}.{want.__name__}"
    if marker.exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and want(m.name)]
        tar.extractall(dest, members=members, filter="data")
    marker.touch()


def hymenoptera() -> tuple[list, list, list[str]]:
    archive = SHARED / "hymenoptera.tar"
    if not archive.exists():
        sys.exit(f"{archive} is absent.")
    dest = CACHE / "hymenoptera"

    def everything(name: str) -> bool:
        return True

    _extract(archive, dest, everything)
    root = dest / "hymenoptera_data"
    classes = ["ants", "bees"]
    split = {s: [(str(f), i) for i, c in enumerate(classes) for f in sorted((root / s / c).iterdir()) if f.is_file()]
             for s in ("train", "val")}
    return split["train"], split["val"], classes


def cifar_files(split: str, per_class: int, skip: int = 0) -> list[tuple[str, int]]:
    """``per_class`` files of each class of the CIFAR-10 ``split`` folder, after the first ``skip``."""
    archive = SHARED / "cifar10" / f"{split}.tar.gz"
    if not archive.exists():
        sys.exit(f"{archive} is absent.")
    dest = CACHE / "cifar10-files"
    limit = skip + per_class

    def first_files(name: str) -> bool:  # NNNN.jpg: the NNNN-th image of its class
        stem = Path(name).stem
        return name.endswith(".jpg") and stem.isdigit() and int(stem) < max(limit, 1000)

    _extract(archive, dest, first_files)
    items = []
    for i, c in enumerate(CIFAR_CLASSES):
        files = sorted((dest / split / c).glob("*.jpg"), key=lambda f: int(f.stem))[skip:limit]
        items += [(str(f), i) for f in files]
    return items


def shrunk(items: list[tuple[str, int]], side: int, dest: Path) -> list[tuple[str, int]]:
    """Copies of the images with the shorter side at most ``side`` px (JPEG quality 95), made once.

    Every row then decodes the same small files, so the table compares training, not the
    decoding of multi-megapixel photos (which would dominate on 2 cores).
    """
    from vetset.core.images import decode

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (path, c) in enumerate(items):
        target = dest / f"{i:05d}.jpg"
        if not target.exists():
            import cv2

            img = decode(path, max_side=4 * side).array
            h, w = img.shape[:2]
            scale = side / min(h, w)
            if scale < 1:
                img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(target), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append((str(target), c))
    return out


def run_fit(train, val, classes, options, seed) -> tuple[float, float, dict]:
    from vetset.plugins.train.stage import fit

    t0 = time.perf_counter()
    out = fit(train, val, classes, {**options, "seed": seed}, log=lambda m: None)
    secs = time.perf_counter() - t0
    best = max(h["val_acc"] for h in out.history)
    final = out.history[out.best_epoch - 1]["val_acc"] if out.best_epoch else best
    return final, secs, out.weights


def summary(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet10t", help="architecture of every row but the ImageNet ones")
    ap.add_argument("--img-size", type=int, default=64, help="input side for ants/bees (CIFAR: 32)")
    ap.add_argument("--source-per-class", type=int, default=200, help="CIFAR-10 train files per class for the source")
    ap.add_argument("--source-epochs", type=int, default=6)
    ap.add_argument("--cifar-train", type=int, default=30, help="CIFAR-10 test files per class to train on")
    ap.add_argument("--cifar-val", type=int, default=50, help="further CIFAR-10 test files per class to validate on")
    ap.add_argument("--imagenet-model", default="mobilenetv3_large_100")
    ap.add_argument("--tasks", nargs="*", default=["ants/bees", "cifar-test"])
    args = ap.parse_args()

    from vetset.plugins.train.stage import fit
    from vetset.plugins.train.weights import pretrained_status

    common = {"model_name": args.model, "epochs": args.epochs, "threads": args.threads, "workers": 0,
              "batch_size": 32, "device": "cpu", "early_stopping_patience": None, "monitor": "val_acc"}
    tasks = {}
    if "ants/bees" in args.tasks:
        train, val, classes = hymenoptera()
        side = max(256, 2 * args.img_size)  # enough for the ImageNet rows' 224 px crops too
        small = CACHE / f"hymenoptera-{side}px"
        tasks["ants/bees"] = (shrunk(train, side, small / "train"), shrunk(val, side, small / "val"), classes,
                              args.img_size)
    if "cifar-test" in args.tasks:
        tasks["cifar-test"] = (cifar_files("test", args.cifar_train), cifar_files("test", args.cifar_val,
                                                                                  skip=args.cifar_train),
                               list(CIFAR_CLASSES), 32)

    work = Path(tempfile.mkdtemp(prefix="vetset-transfer-"))
    source_items = cifar_files("train", args.source_per_class)
    t0 = time.perf_counter()
    src = fit(source_items, cifar_files("train", 50, skip=args.source_per_class), list(CIFAR_CLASSES),
              {**common, "epochs": args.source_epochs, "img_size": 32, "seed": 0}, out_dir=work / "source",
              log=lambda m: None)
    source_secs = time.perf_counter() - t0
    source_acc = max(h["val_acc"] for h in src.history)
    print(f"source checkpoint: {args.model} trained from scratch on {len(source_items)} CIFAR-10 train files "
          f"({args.source_epochs} epochs, 32 px) in {source_secs:.0f} s, val acc {source_acc:.3f} on 500 other "
          f"train files: {src.best_checkpoint}")

    status = pretrained_status(args.imagenet_model)
    rows = [("scratch", {"pretrained": False}),
            ("ckpt probe", {"weights": src.best_checkpoint, "finetune": "linear_probe", "lr": 1e-2}),
            ("ckpt fine-tune", {"weights": src.best_checkpoint, "finetune": "full"})]
    if status["available"]:
        rows += [("imagenet probe", {"model_name": args.imagenet_model, "pretrained": True, "img_size": None,
                                     "finetune": "linear_probe", "lr": 1e-2}),
                 ("imagenet fine-tune", {"model_name": args.imagenet_model, "pretrained": True, "img_size": None,
                                        "finetune": "full"})]
        print(f"ImageNet rows: {status['pretrained_tag']} ({'cached' if status['cached_file'] else 'Hub reachable'})")
    else:
        print(f"ImageNet rows skipped: {status['pretrained_tag']} is not cached and the Hub is not reachable "
              f"(offline={status['offline']}).")

    print(f"\n{args.seeds} seeds, {args.epochs} epochs, {args.threads} CPU threads; median [min-max]")
    print(f"| {'task':<10} | {'row':<19} | {'train/val':>9} | {'val accuracy':>22} | {'wall s':>20} |")
    print(f"|{'-' * 12}|{'-' * 21}|{'-' * 11}|{'-' * 24}|{'-' * 22}|")
    for task, (train, val, classes, size) in tasks.items():
        for name, extra in rows:
            opts = {**common, "img_size": size, **extra}
            accs, secs = [], []
            for seed in range(args.seeds):
                acc, sec, _ = run_fit(train, val, classes, opts, seed)
                accs.append(acc)
                secs.append(sec)
            print(f"| {task:<10} | {name:<19} | {len(train):>4}/{len(val):<4} | {summary(accs, '{:.3f}'):>22} | "
                  f"{summary(secs, '{:.1f}'):>20} |", flush=True)


if __name__ == "__main__":
    main()
