"""The built-in demo data: scikit-learn's bundled handwritten digits as an ImageFolder tree.

``load_digits`` ships inside scikit-learn (UCI "Optical Recognition of Handwritten Digits",
1,797 real 8x8 images, 10 classes of about 180), so the demo needs no download. Pixel
values 0..16 (16 = ink) become 8-bit grayscale PNGs, dark ink on white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vetset.core.atomic import atomic_write


def write_digits(out: str | Path, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write ``out/digits/{train,val}/<digit>/<index>.png``; returns the ``digits`` root.

    Existing files with the same name are left alone, so a rerun writes nothing new.

    Args:
        out: parent folder (created if missing).
        val_fraction: share of each class written to ``val`` (seeded, stratified).
        seed: split seed.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from vetset.core.dataset import stratified_split

    digits = load_digits()
    root = Path(out).expanduser().resolve() / "digits"
    labels = [str(t) for t in digits.target]
    splits = stratified_split(labels, val_fraction, seed)
    for idx, (img, label, split) in enumerate(zip(digits.images, labels, splits)):
        path = root / split / label / f"{idx:04d}.png"
        if path.exists():
            continue
        pixels = (255 - np.rint(img * (255.0 / 16.0))).astype(np.uint8)
        atomic_write(path, lambda f, pixels=pixels: Image.fromarray(pixels, "L").save(f, format="PNG"), mkdir=True)
    return root
