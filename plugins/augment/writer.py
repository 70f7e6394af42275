"""The augmentation writer's image work: decode, transform, encode, write atomically.

Work per image runs in worker processes (:mod:`vetset.core.executor`) or in-process:
decode with :func:`vetset.core.images.decode` (EXIF-oriented RGB), seed the policy's
``A.Compose`` with the image's own seed, apply it with ``save_applied_params=True``,
encode with OpenCV and write the file atomically (:func:`vetset.core.atomic.atomic_write`). Only the
output size and the applied parameters travel back; the FiftyOne side is
:mod:`vetset.plugins.augment.store`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from vetset.core.atomic import atomic_write


@dataclass(frozen=True)
class WriterConfig:
    """What every worker needs, sent once per chunk (small and picklable).

    Attributes:
        pipelines: policy name -> pipeline spec (inner ``A.to_dict`` mapping).
        custom: serialized name -> custom transform class (from plugins).
        jpeg_quality: OpenCV ``IMWRITE_JPEG_QUALITY`` 0-100 for ``.jpg`` outputs.
        png_compression: OpenCV ``IMWRITE_PNG_COMPRESSION`` 0-9 for ``.png`` outputs.
        key: fingerprint of the pipelines, to cache built pipelines per worker.
    """

    pipelines: dict[str, dict[str, Any]]
    custom: dict[str, type] = field(default_factory=dict)
    jpeg_quality: int = 95
    png_compression: int = 3
    key: str = ""


@dataclass(frozen=True)
class Task:
    """One image to produce: ``policy`` on ``source`` with ``seed`` into ``out_path``.

    ``write`` is False when the file already exists (an interrupted earlier run wrote
    it); the transform is still drawn, with the same seed, to recover its parameters.
    """

    source: str
    out_path: str
    policy: str
    seed: int
    write: bool = True


_CACHE: dict[tuple[str, str], Any] = {}


def _pipeline(cfg: WriterConfig, policy: str) -> Any:
    key = (cfg.key, policy)
    pipe = _CACHE.get(key)
    if pipe is None:
        from vetset.plugins.augment.pipeline import build_pipeline

        if len(_CACHE) > 64:
            _CACHE.clear()
        pipe = _CACHE[key] = build_pipeline(cfg.pipelines[policy], cfg.custom, f"policy {policy!r}",
                                            save_applied_params=True)
    return pipe


def is_gray(image: np.ndarray) -> bool:
    """Whether the three channels of an ``(H, W, 3)`` array are identical.

    A strided 1/64 sample is compared first, so a colour image costs almost nothing.
    """
    probe = image[::8, ::8]
    if (probe[..., 0] != probe[..., 1]).any() or (probe[..., 0] != probe[..., 2]).any():
        return False
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def encode(image: np.ndarray, path: str, cfg: WriterConfig) -> bytes:
    """Encode an RGB (or single-channel) ``uint8`` array for ``path``'s extension.

    An image whose three channels are equal is written with one channel, so grayscale
    stays unambiguous whatever the format.

    Raises:
        ValueError: OpenCV cannot encode it.
    """
    import cv2

    if image.ndim == 3 and image.shape[2] == 3:
        if is_gray(image):
            image = image[..., 0]
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    ext = os.path.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if ext == ".jpg" else \
        [cv2.IMWRITE_PNG_COMPRESSION, cfg.png_compression]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    return buf.tobytes()


def transform_one(cfg: WriterConfig, source: str, policy: str, seed: int) -> tuple[np.ndarray | None, Any]:
    """Decode ``source`` and apply ``policy`` seeded with ``seed``.

    Returns:
        ``(image, applied)``: the ``uint8`` output array and albumentations'
        ``applied_transforms`` list; or ``(None, reason)`` when the source cannot be
        decoded or the pipeline fails or returns something that is not a ``uint8`` image.
    """
    from vetset.core.images import decode

    img = decode(source)
    if img.array is None:
        return None, f"{source}: {img.error}"
    pipe = _pipeline(cfg, policy)
    # One numpy and one Python stream shared by every transform, drawn in turn (as the
    # trainer does). ``Compose.set_random_seed`` would give each transform its own
    # generator with the same seed: identical first draws, so two p=0.5 transforms always
    # fired together (the light policy's flip and brightness/contrast: 209 of 400 seeds
    # each, always both), and it costs a generator pair per transform.
    pipe.set_random_state(np.random.default_rng(seed), random.Random(seed))
    try:
        out = pipe(image=img.array)
    except Exception as exc:
        return None, f"policy {policy!r} failed on {source}: {type(exc).__name__}: {exc}"
    image = out["image"]
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        kind = f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        return None, (f"policy {policy!r} returned a {kind} image; writing needs uint8 (H, W[, C]) "
                      "(remove Normalize/ToTensorV2 from augmentation policies)")
    return image, out.get("applied_transforms", [])


def apply_one(cfg: WriterConfig, task: Task) -> dict[str, Any]:
    """Produce one image (runs in a worker process).

    Returns:
        ``{"error": None | str, "width", "height" (pixels of the output), "params": [
        {"transform": name, "params": {...}}, ...]}`` — the applied parameters from
        albumentations' ``save_applied_params``, made JSON-safe.
    """
    from vetset.plugins.augment.pipeline import jsonable_params

    image, applied = transform_one(cfg, task.source, task.policy, task.seed)
    if image is None:
        return {"error": applied}
    if task.write or not os.path.exists(task.out_path):
        try:
            atomic_write(task.out_path, encode(image, task.out_path, cfg))
        except (OSError, ValueError) as exc:
            return {"error": f"cannot write {task.out_path}: {exc}"}
    params = [{"transform": str(name), "params": jsonable_params(p)} for name, p in applied]
    return {"error": None, "width": int(image.shape[1]), "height": int(image.shape[0]), "params": params}


def _init_worker_threads() -> None:
    """One OpenCV thread per worker process, so N workers use N cores, not N x cores.

    Also imports albumentations without torch (:func:`~vetset.plugins.augment.pipeline.import_albumentations`)
    when the forkserver did not preload it (another stage started the forkserver first).
    """
    import cv2

    from vetset.plugins.augment.pipeline import import_albumentations

    cv2.setNumThreads(1)
    import_albumentations()


def _apply_in_worker(cfg: WriterConfig, task: Task) -> dict[str, Any]:
    """:func:`apply_one` in a worker process, or in the parent while the workers start
    (:meth:`vetset.core.executor.LocalExecutor.map`), where the thread setup is skipped."""
    from vetset.core.executor import setup_worker_once

    setup_worker_once(_init_worker_threads)
    return apply_one(cfg, task)


#: Most images a worker takes at once.
CHUNK_SIZE = 16

#: Modules the forkserver imports once (when this is the first user of the forkserver in
#: the process), so that workers start without importing them. ``_preload`` imports
#: albumentations without torch (:func:`~vetset.plugins.augment.pipeline.import_albumentations`),
#: so it comes first.
PRELOAD = ("vetset.plugins.augment._preload", "numpy", "cv2", "vetset.core.images", "vetset.plugins.augment.writer",
           "vetset.plugins.augment.transforms")


def run_tasks(tasks: list[Task], cfg: WriterConfig, workers: int | None, progress: Callable[..., Iterable] | None = None
              ) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Apply every task with the run's executor (local by default); yields ``(task, result)`` in input order."""
    from vetset.core.executor import executor_for

    executor = executor_for(None, workers, preload=PRELOAD)
    n_workers = getattr(executor, "workers", 0)
    fn = partial(_apply_in_worker if n_workers > 1 else apply_one, cfg)
    # An image costs milliseconds (decode, transform, encode), so small chunks cost nothing
    # in messaging and keep the last chunk short: with the executor's default (n / 16 for
    # 2 workers, 122 photos here) one worker idled for up to half a second at the end.
    chunksize = min(CHUNK_SIZE, len(tasks) // (max(1, n_workers) * 8) or 1)
    results = executor.map(fn, tasks, chunksize=chunksize)
    if progress is not None:
        results = progress(results, total=len(tasks))
    yield from zip(tasks, results, strict=True)
