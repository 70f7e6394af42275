"""The planted case of the failure-slice tests and the retrain-loop benchmark.

From real CIFAR-10 test JPEGs: an ImageFolder tree ``{train,val}/<class>/`` where every
train image of the planted class is colour, and a third of its val images are grayscale
copies (``PIL.Image.convert("L")``) of colour CIFAR photos. The source files are read, never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Classes of the planted case; the planted class is the one whose colour carries most.
CLASSES = ("airplane", "frog", "truck")
PLANTED = "frog"


def is_colour(path: Path, tolerance: int = 12, fraction: float = 0.01) -> bool:
    """The audit's colour rule (``audit.colour`` defaults): over 1% of pixels with channels more than 12 apart."""
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return float(((arr.max(2) - arr.min(2)) > tolerance).mean()) > fraction


def write_planted(cifar_test: Path, dest: Path, classes: tuple[str, ...] = CLASSES, planted: str = PLANTED,
                  n_train: int = 150, n_val: int = 60, gray_share: float = 1 / 3, seed: int = 0) -> dict[str, object]:
    """Write the planted tree under ``dest``; returns ``{"root", "gray_val": [paths], "planted"}``.

    Args:
        cifar_test: ``<root>/test`` of the unpacked CIFAR-10 JPEGs (``<class>/NNNN.jpg``).
        dest: output folder (created).
        n_train, n_val: images per class per split.
        gray_share: share of the planted class's val images that are grayscale copies.
        seed: which files are drawn.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    gray_paths = []
    for cls in classes:
        files = sorted((cifar_test / cls).glob("*.jpg"))
        files = [files[i] for i in rng.permutation(len(files))]
        if cls == planted:
            files = [f for f in files[: 3 * (n_train + n_val)] if is_colour(f)]
        train, val = files[:n_train], files[n_train:n_train + n_val]
        n_gray = round(gray_share * n_val) if cls == planted else 0
        for split, chosen in (("train", train), ("val", val)):
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(chosen):
                target = out / f.name
                if split == "val" and i < n_gray:
                    target = out / f"gray_{f.name}"
                    Image.open(f).convert("L").save(target, quality=95)
                    gray_paths.append(str(target))
                else:
                    target.write_bytes(f.read_bytes())
    return {"root": dest, "gray_val": gray_paths, "planted": planted}


def write_leaky(cifar_test: Path, digits_root: Path, dest: Path, classes: tuple[str, str] = ("cat", "ship"),
                n_train: int = 40, n_val: int = 25, n_test: int = 20, n_copies: int = 8,
                n_odd: int = 6) -> dict[str, object]:
    """An ImageFolder tree ``{train,val,test}/<class>/`` of CIFAR photos with planted near duplicates and oddities.

    * ``n_copies`` val and ``n_copies // 2`` test images of ``classes[1]`` are copies of its
      train photos re-encoded as JPEG quality 60 (near duplicates of train images);
    * ``n_odd`` val images of ``classes[0]`` are handwritten digits (8x8, upscaled to 32x32):
      unlike every photo.

    Returns:
        ``{"root", "copies": {copy path: train source path}, "odd": [paths]}``.
    """
    from PIL import Image

    dest = Path(dest)
    copies: dict[str, str] = {}
    for k, cls in enumerate(classes):
        files = sorted((cifar_test / cls).glob("*.jpg"))
        parts = {"train": files[:n_train], "val": files[n_train:n_train + n_val],
                 "test": files[n_train + n_val:n_train + n_val + n_test]}
        for split, chosen in parts.items():
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (out / f.name).write_bytes(f.read_bytes())
        if k == 1:
            for split, n in (("val", n_copies), ("test", n_copies // 2)):
                for f in parts["train"][:n] if split == "val" else parts["train"][n_copies:n_copies + n]:
                    target = dest / split / cls / f"copy_{f.name}"
                    Image.open(f).convert("RGB").save(target, quality=60)
                    copies[str(target)] = str(dest / "train" / cls / f.name)
    odd = []
    digits = sorted(p for p in Path(digits_root).rglob("*.png"))[:n_odd]
    for i, f in enumerate(digits):
        target = dest / "val" / classes[0] / f"digit_{i}.png"
        Image.open(f).convert("RGB").resize((32, 32), Image.NEAREST).save(target)
        odd.append(str(target))
    return {"root": dest, "copies": copies, "odd": odd}
