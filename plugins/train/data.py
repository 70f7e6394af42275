"""Data and device plumbing of the trainer: datasets, transforms, loaders, device and AMP.

Images are decoded with :func:`vetset.core.images.decode` (EXIF orientation, palette,
CMYK and 16-bit handled once for every part of vetset), resized with albumentations, and
handed to the model as ``uint8`` tensors; normalisation with the model's mean/std happens
on the device (as timm's ``PrefetchLoader`` does), so worker processes and the host-device
copy move a quarter of the bytes.

Augmentation randomness is a pure function of ``(seed, epoch, sample index)``: the
sampler yields ``(index, epoch)`` pairs and each sample reseeds the pipeline, so results do
not depend on the number of workers or their scheduling, and a resumed run sees the same
augmentations as an uninterrupted one.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: timm interpolation names -> OpenCV flags used by albumentations.
_INTERP = {"bicubic": 2, "bilinear": 1, "nearest": 0, "area": 3, "lanczos": 4}


def resolve_device(name: str = "auto") -> Any:
    """``torch.device`` for the ``device`` option.

    ``auto`` picks CUDA when ``torch.cuda.is_available()``, then Apple MPS, then CPU.

    Raises:
        RecipeError: an explicit ``cuda``/``mps`` device that this machine lacks, or an
            unknown device string.
    """
    import torch

    from vetset.core.errors import RecipeError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise RecipeError(f"stages.train.device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"stages.train.device: {name!r} asked for, but CUDA is not available here; use auto or cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RecipeError(f"stages.train.device: {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RecipeError(f"stages.train.device: {name!r} asked for, but MPS is not available here; use auto or cpu.")
    return dev


def resolve_amp(amp: str, device: Any, bf16_supported: bool | None = None) -> Any:
    """The autocast dtype for the ``amp`` option on ``device``, or ``None`` for full precision.

    Args:
        amp: ``auto``, ``bfloat16``, ``float16`` or ``off``.
        device: a ``torch.device``.
        bf16_supported: override of ``torch.cuda.is_bf16_supported()`` (for tests).

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or ``None``. ``auto`` gives bfloat16 on CUDA
        devices that support it (Ampere and later), float16 on older CUDA devices, and
        ``None`` on CPU/MPS (CPU autocast is slower than float32 on most CPUs).

    Raises:
        RecipeError: ``float16`` on a CPU (CPU autocast supports bfloat16 only).
    """
    import torch

    from vetset.core.errors import RecipeError

    if amp == "off":
        return None
    if device.type == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        if amp == "auto":
            return torch.bfloat16 if bf16_supported else torch.float16
        return torch.bfloat16 if amp == "bfloat16" else torch.float16
    if amp == "auto":
        return None
    if device.type == "cpu" and amp == "float16":
        raise RecipeError("stages.train.amp: float16 needs a CUDA device; use bfloat16 or off on CPU.")
    return torch.bfloat16 if amp == "bfloat16" else torch.float16


def default_loader_workers(device: Any = None) -> int:
    """Automatic DataLoader worker count (the ``workers: null`` option).

    On CUDA one worker per usable CPU, at most 8 (more rarely helps one GPU). On CPU the
    workers compete with the model's own threads for the same cores, so a quarter of the
    CPUs, at most 4, and none below 4 CPUs.
    """
    from vetset.core.executor import default_workers

    cpus = default_workers()
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        return min(8, cpus)
    return min(4, cpus // 4)


def sample_seed(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """Seed sequence of one sample's augmentation in one epoch (order-independent)."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index])


def build_transforms(data_config: dict[str, Any], train_transform: Any = None, train: bool = True) -> Any:
    """The albumentations pipeline that turns a decoded RGB image into the model's input.

    Train: shorter side resized to ``img_size / crop_pct``, then the user's
    ``train_transform``, then pad (if the user's transforms shrank it) and a random
    ``img_size`` square crop. Eval: shorter side resized to ``img_size / crop_pct`` and a
    centre ``img_size`` crop (timm's eval transform), so training and evaluation see objects
    at the same scale (cf. Touvron et al. 2019, "Fixing the train-test resolution
    discrepancy"). From scratch ``crop_pct`` is 1.0; pretrained weights bring their tag's
    (0.875-0.95 for ImageNet tags).

    Args:
        data_config: from ``timm.data.resolve_data_config``; uses ``input_size``,
            ``interpolation`` and ``crop_pct`` (default 1.0).
        train_transform: an ``A.Compose`` or ``None``.
        train: training (random crop, user augmentation) or evaluation pipeline.

    Returns:
        An ``A.Compose`` producing ``uint8`` ``(img_size, img_size, 3)`` arrays.
    """
    import albumentations as A
    import cv2

    _, h, w = data_config["input_size"]
    interp = _INTERP.get(str(data_config.get("interpolation", "bicubic")), 2)
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    resize = int(round(min(h, w) / crop_pct)) if 0 < crop_pct < 1 else min(h, w)
    steps: list[Any] = [A.SmallestMaxSize(max_size=resize, interpolation=interp, p=1.0)]
    if train:
        if train_transform is not None:
            steps.append(train_transform)
        steps += [A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
                  A.RandomCrop(height=h, width=w, p=1.0)]
    else:
        steps.append(A.CenterCrop(height=h, width=w, p=1.0))
    return A.Compose(steps, p=1.0)


class ImageDataset:
    """Map-style torch dataset over ``(filepath, class_index)`` pairs.

    Items are ``(image, target)``: ``image`` a ``uint8`` tensor ``(3, H, W)``, ``target`` an
    ``int64`` class index (``-1`` when unknown). The index given to ``__getitem__`` may be a
    plain ``int`` or an ``(index, epoch)`` pair from :class:`EpochSampler`.

    Args:
        items: ``(filepath, class_index)`` pairs.
        transform: albumentations pipeline from :func:`build_transforms`.
        max_side: decode JPEGs with Pillow draft mode to at least this longer side
            (about twice the input size keeps quality while skipping most of the IDCT).
        seed: augmentation seed (see :func:`sample_seed`).

    Raises (from ``__getitem__``):
        DataError: a file cannot be decoded; the message names it and the reason.
    """

    def __init__(self, items: Sequence[tuple[str, int]], transform: Any, max_side: int | None = None, seed: int = 0):
        self.items = [(str(p), int(c)) for p, c in items]
        self.transform = transform
        self.max_side = max_side
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> tuple[Any, int]:
        import torch

        from vetset.core.errors import DataError
        from vetset.core.images import decode

        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, target = self.items[index]
        img = decode(path, max_side=self.max_side)
        if img.array is None:
            raise DataError(f"{path} cannot be decoded for training ({img.error}); the audit tags such files 'unreadable'.")
        ss = sample_seed(self.seed, epoch, index)
        self.transform.set_random_state(np.random.default_rng(ss), random.Random(int(ss.generate_state(1)[0])))
        arr = self.transform(image=img.array)["image"]
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), target


class EpochSampler:
    """Yields ``(index, epoch)`` in a seeded random order that depends only on ``(seed, epoch)``.

    Call :meth:`set_epoch` before iterating (as with ``DistributedSampler``).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.n)
        if self.shuffle:
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 0x5EED]).permutation(self.n)
        return iter([(int(i), self.epoch) for i in order])


class BalancedEpochSampler(EpochSampler):
    """Class-balanced ``(index, epoch)`` draws: ``n`` per epoch, with replacement, each item
    with probability proportional to ``1 / n_c`` of its class ``c``, so every class is drawn
    equally often in expectation (a seeded ``WeightedRandomSampler`` that depends only on
    ``(seed, epoch)``).

    Args:
        targets: class index per item, shape ``(n,)``.
    """

    def __init__(self, targets: Sequence[int], seed: int = 0):
        super().__init__(len(targets), seed=seed, shuffle=True)
        t = np.asarray(targets, dtype=np.int64)
        counts = np.bincount(t)
        w = 1.0 / counts[t]
        self.p = w / w.sum()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 0xBA1A])
        return iter([(int(i), self.epoch) for i in rng.choice(self.n, size=self.n, replace=True, p=self.p)])


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, train: bool, seed: int = 0,
                pin_memory: bool = False, drop_last: bool = False, num_replicas: int = 1,
                rank: int = 0, balanced: bool = False) -> tuple[Any, Any]:
    """A ``torch.utils.data.DataLoader`` with worker processes and an :class:`EpochSampler`.

    Workers start from a ``forkserver`` context (safe next to the MongoDB client FiftyOne
    keeps in this process, unlike ``fork``) that preloads this module and torch once, and
    they persist across epochs.

    Args:
        num_replicas, rank: with ``num_replicas`` > 1 (training under torchrun) and
            ``train``, the sampler is a
            :class:`vetset.plugins.train.distributed.DistributedEpochSampler` giving this rank its
            share of every epoch.
        balanced: a :class:`BalancedEpochSampler` over the dataset's targets (one process only).

    Returns:
        ``(loader, sampler)``; call ``sampler.set_epoch(e)`` before each epoch.
    """
    import torch

    if num_replicas > 1 and train:
        from vetset.plugins.train.distributed import DistributedEpochSampler

        sampler = DistributedEpochSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
    elif balanced and train:
        sampler = BalancedEpochSampler([c for _, c in dataset.items], seed=seed)
    else:
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=train)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        ctx = mp.get_context("forkserver")
        try:
            ctx.set_forkserver_preload(["torch", "albumentations", "vetset.plugins.train.data"])
        except Exception:  # pragma: no cover - already started; preload is only a speed-up
            pass
        kwargs = dict(multiprocessing_context=ctx, persistent_workers=True, prefetch_factor=4,
                      worker_init_fn=quiet_fd_sharing_errors)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         pin_memory=pin_memory, drop_last=drop_last, **kwargs)
    return loader, sampler


def quiet_fd_sharing_errors(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker's file-descriptor sharing thread
    (``multiprocessing.resource_sharer``, which hands batches' shared memory to the main
    process) reports a connection its peer dropped through ``sys.excepthook``: a traceback on
    the user's terminal when a run is interrupted while a batch is in flight. Those reports
    are dropped; every other exception reaches the previous hook."""
    import sys

    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if tb is not None and tb.tb_frame.f_code.co_filename.endswith("resource_sharer.py"):
            return  # raised in the sharing thread's own loop (_serve)
        previous(kind, value, tb)

    sys.excepthook = hook


def to_model_input(images: Any, device: Any, mean: Any, std: Any, channels_last: bool) -> Any:
    """``uint8`` ``(B, 3, H, W)`` batch -> normalised ``float32`` on ``device``.

    ``mean``/``std`` are ``(1, 3, 1, 1)`` tensors on ``device`` in 0..255 units.
    """
    import torch

    x = images.to(device, non_blocking=True).float().sub_(mean).div_(std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
