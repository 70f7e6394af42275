"""The embedding pass: decode, preprocess, run the backbone in batches, yield pooled features.

Preprocessing is timm's eval transform for the backbone's data config
(``timm.data.create_transform(**data_config, is_training=False)``: resize, centre crop,
normalise). Images are decoded once with :func:`vetset.core.images.decode` (EXIF orientation
applied; large JPEGs decoded at a reduced DCT scale no smaller than 4x the input side) by a
small thread pool while the model runs the previous batch. The model runs on the GPU when
one is available (``device: auto``).

With ``flip=True`` a batch also goes through the model mirrored left-right and the two
feature vectors are averaged: a mirrored copy then gets the same features as its original
(up to the resampling of the crop). With ``crops``, each image's central fraction (of the
preprocessed input, resized back to the input size) goes through the model too, and all
views' features are averaged: a cropped copy then shares views with its original (the
multi-crop test-time averaging of image retrieval; e.g. Gordo et al., IJCV 2017).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vetset.plugins.embed.backbone import Backbone


def pick_device(device: str = "auto") -> Any:
    """``torch.device``: ``cuda`` when ``device`` is ``auto`` and a GPU is visible, else ``device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load(path: str, transform: Any, max_side: int) -> Any:
    from PIL import Image

    from vetset.core.images import decode

    img = decode(path, max_side)
    if img.array is None:
        return None
    return transform(Image.fromarray(img.array))


def _views(x: Any, flip: bool, crops: Sequence[float]) -> list[Any]:
    """The input batch ``x`` (``(B, C, H, W)``), its centre crops resized back, and their mirrors."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    out = [x]
    for c in crops:
        ch, cw = max(1, round(h * c)), max(1, round(w * c))
        top, left = (h - ch) // 2, (w - cw) // 2
        out.append(F.interpolate(x[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                 align_corners=False))
    return out + [v.flip(dims=[3]) for v in out] if flip else out


def embed_batches(backbone: Backbone, paths: Sequence[str], batch_size: int = 32, flip: bool = False,
                  device: str = "auto", threads: int = 2,
                  crops: Sequence[float] = ()) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, features, ok)`` per batch of ``paths``, in order.

    Args:
        backbone: the feature extractor (:class:`~vetset.plugins.embed.backbone.Backbone`).
        paths: image files.
        batch_size: images per forward pass.
        flip: average each image's features with its left-right mirror's.
        device: ``auto`` (GPU when available), ``cpu``, ``cuda``, ``cuda:1``...
        threads: decoding threads (Pillow and OpenCV release the GIL).
        crops: central fractions in (0, 1) of the preprocessed input whose features are
            averaged in too (each resized back bilinearly; with ``flip``, mirrored as well).

    Yields:
        ``start`` (index of the batch's first path), ``features`` ``float32``
        ``(len(batch), D)`` (rows of unreadable files are NaN) and ``ok`` ``bool``
        ``(len(batch),)`` (False for files that cannot be decoded).
    """
    import torch
    from timm.data import create_transform

    cfg = backbone.data_config
    transform = create_transform(**cfg, is_training=False)
    max_side = 4 * int(cfg["input_size"][-1])
    dev = pick_device(device)
    model = backbone.model.to(dev).eval()
    dim = int(model.num_features)
    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, torch.inference_mode():
        def submit(s: int) -> list:
            return [pool.submit(_load, p, transform, max_side) for p in paths[s:s + batch_size]]

        pending = submit(starts[0]) if starts else []
        for b, start in enumerate(starts):
            tensors = [f.result() for f in pending]
            pending = submit(starts[b + 1]) if b + 1 < len(starts) else []  # decode ahead while the model runs
            ok = np.array([t is not None for t in tensors], dtype=bool)
            feats = np.full((len(tensors), dim), np.nan, dtype=np.float32)
            if ok.any():
                x = torch.stack([t for t in tensors if t is not None]).to(dev)
                views = _views(x, flip, crops)
                f = sum(model(v).float() for v in views) / len(views)
                feats[ok] = f.cpu().numpy()
            yield start, feats, ok
