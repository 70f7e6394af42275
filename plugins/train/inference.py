"""Inference: :func:`predict` and the helpers the training loop shares with it.

Images go through the evaluation transform of :func:`vetset.plugins.train.data.build_transforms`
(shorter side to the input size, centre crop), no augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vetset.plugins.train.data import (
    ImageDataset,
    build_transforms,
    default_loader_workers,
    make_loader,
    resolve_amp,
    to_model_input,
)
from vetset.plugins.train.options import as_options


class cpu_threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored after."""

    def __init__(self, n: int | None):
        self.n, self.prev = n, None

    def __enter__(self) -> None:
        import torch

        if self.n:
            self.prev = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.prev:
            torch.set_num_threads(self.prev)


def infer_logits(model: Any, loader: Any, device: Any, amp_dtype: Any, mean: Any, std: Any,
                 channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, K)`` float32 and targets ``(N,)`` int64 over a loader, in loader order."""
    import torch

    model.eval()
    logits, targets = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                enabled=amp_dtype is not None):
        for images, target in loader:
            x = to_model_input(images, device, mean, std, channels_last)
            logits.append(model(x).float().cpu())
            targets.append(target)
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(logits).numpy().astype(np.float32), torch.cat(targets).numpy().astype(np.int64)


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy in nats of ``(N, K)`` logits against ``(N,)`` class indices."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].mean()) if len(targets) else float("nan")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, float32."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def predict(model: Any, filepaths: Sequence[str], data_config: dict[str, Any], options: Any = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and logits of ``model`` for image files (eval transform, no augmentation).

    Args:
        model: a ``torch.nn.Module`` (e.g. ``FitOutput.model``); it runs on the device its
            parameters are on and is put in eval mode.
        filepaths: image files, decoded with :func:`vetset.core.images.decode`.
        data_config: the model's data config (``FitOutput.data_config`` or a checkpoint's).
        options: :class:`TrainOptions` or mapping; uses ``batch_size``, ``workers``, ``amp``
            and ``channels_last``.

    Returns:
        ``(probs, logits)``, both ``float32`` of shape ``(N, K)``; ``probs`` rows sum to 1
        (softmax of the logits computed in float32).

    Raises:
        DataError: a file cannot be decoded.
    """
    import torch

    opts = as_options(options)
    if not filepaths:
        k = int(getattr(model, "num_classes", 0) or 0)
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.float32)
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(opts.amp, device)
    channels_last = opts.channels_last and device.type == "cuda"
    side = int(data_config["input_size"][-1])
    ds = ImageDataset([(p, -1) for p in filepaths], build_transforms(data_config, train=False), max_side=2 * side)
    workers = default_loader_workers(device) if opts.workers is None else opts.workers
    workers = min(workers, len(filepaths) // opts.batch_size)
    loader, _ = make_loader(ds, opts.batch_size, workers, False, pin_memory=device.type == "cuda")
    mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1) * 255.0
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    with cpu_threads(opts.threads):
        logits, _ = infer_logits(model, loader, device, amp_dtype, mean, std, channels_last)
    return softmax(logits), logits
