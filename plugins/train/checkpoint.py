"""Checkpoint files of the trainer: written atomically, read with ``weights_only=True``.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` (PyTorch's safe unpickler, which refuses
arbitrary objects) can read it::

    {
      "format": "vetset-checkpoint", "version": 1,
      "model_name": "resnet10t", "classes": [...], "num_classes": K,
      "data_config": {"input_size": [3, H, W], "mean": [...], "std": [...], ...},
      "options": {...TrainOptions...}, "recipe": {...} | None,
      "epoch": e (0-based), "history": [...per-epoch dicts...], "best": {...},
      "state_dict": {...weights used for evaluation: EMA weights when ema is on...},
      "train_state": {"model", "optimizer", "ema", "scaler"} | None   # last.pt only
    }

``best.pt`` holds the best epoch's evaluation weights; ``last.pt`` also holds the training
state that ``--resume`` continues from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vetset.core.atomic import atomic_write

FORMAT = "vetset-checkpoint"
VERSION = 1
BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (see the module docstring) to ``path`` atomically (:func:`vetset.core.atomic.atomic_write`).

    An interrupted write never leaves a truncated checkpoint behind.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(body, f))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a vetset checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        VetsetError: the file is missing, unreadable, or not a vetset checkpoint.
    """
    import torch

    from vetset.core.errors import VetsetError

    path = Path(path)
    if not path.is_file():
        raise VetsetError(f"Checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise VetsetError(f"Checkpoint {path} cannot be read safely (weights_only=True): {exc}") from None
    if not is_vetset_checkpoint(ckpt):
        raise VetsetError(f"{path} is not a vetset checkpoint (no 'format: {FORMAT}' entry).")
    return ckpt


def is_vetset_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a vetset checkpoint dict."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT and "state_dict" in obj


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike, device: Any = "cpu") -> Any:
    """Rebuild the timm model of a checkpoint with its evaluation weights, in eval mode.

    Args:
        ckpt: a loaded checkpoint or its path.
        device: where to put the model.

    Returns:
        The ``torch.nn.Module``.
    """
    import timm

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    model = timm.create_model(ckpt["model_name"], pretrained=False, num_classes=int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def load_weights_into(model: Any, state_dict: dict[str, Any], log: Any = print) -> list[str]:
    """Copy matching tensors of ``state_dict`` into ``model``; skip shape mismatches.

    Used to start from a vetset checkpoint trained on other classes: the classifier has
    another shape and is left at its fresh initialisation.

    Returns:
        Names of the parameters left at their initial values.
    """
    own = model.state_dict()
    usable = {k: v for k, v in state_dict.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    missing = sorted(set(own) - set(usable))
    model.load_state_dict(usable, strict=False)
    if missing:
        log(f"[train] weights: {len(missing)} tensors kept at initialisation (shape or name differs): "
            + ", ".join(missing[:4]) + ("..." if len(missing) > 4 else ""))
    return missing
