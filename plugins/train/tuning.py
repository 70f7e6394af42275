"""Fine-tuning plan and class-imbalance handling of the trainer, resolved from the options.

Defaults (documented on :class:`vetset.plugins.train.options.TrainOptions`): with
pretrained weights, one head-only epoch then every layer, the backbone at 0.1 x ``lr``,
no layer-wise decay; from scratch, every layer at ``lr`` from the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vetset.core.errors import RecipeError
from vetset.plugins.train.options import TrainOptions

#: The audit's default imbalance threshold (``stages.audit.checks.balance.max_imbalance_ratio``), used
#: when the run has no audit result to take it from.
DEFAULT_MAX_IMBALANCE_RATIO = 10.0


def finetune_plan(options: TrainOptions, pretrained_loaded: bool) -> dict[str, Any]:
    """The fine-tuning schedule for the options, given whether pretrained weights were loaded.

    Returns:
        ``{"finetune": "full"|"linear_probe", "head_epochs": int (0..epochs),
        "backbone_lr_scale": float (0..1), "layer_decay": float | None}``.
    """
    if options.head_epochs is not None:
        head = int(options.head_epochs)
    else:
        head = 1 if pretrained_loaded and options.epochs > 2 and options.finetune == "full" else 0
    scale = options.backbone_lr_scale if options.backbone_lr_scale is not None else (0.1 if pretrained_loaded else 1.0)
    return {"finetune": options.finetune, "head_epochs": min(head, options.epochs),
            "backbone_lr_scale": float(scale), "layer_decay": options.layer_decay}


def imbalance_ratio(targets: Sequence[int], num_classes: int) -> float | None:
    """Largest over smallest non-empty class count of ``targets`` (class indices), or ``None``."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    nonzero = counts[counts > 0]
    return float(nonzero.max() / nonzero.min()) if len(nonzero) else None


def resolve_class_balance(options: TrainOptions, targets: Sequence[int], num_classes: int,
                          threshold: float | None = None, audit: dict[str, Any] | None = None,
                          distributed: bool = False) -> dict[str, Any]:
    """Which imbalance handling the run uses, and the console line that says so.

    ``auto``: when the training images' imbalance ratio (largest / smallest class) exceeds
    ``threshold`` (the audit's ``max_imbalance_ratio``, default 10), class-weighted loss,
    or the class-balanced sampler with mixup/cutmix (soft targets take no class weights);
    otherwise ``off``. Explicit ``loss``/``sampler``/``off`` are used as given.

    Args:
        targets: class index of every training image (augmented ones included).
        audit: the audit's ``balance`` check summary, when the run audited (its
            ``imbalance_ratio`` is quoted on the console).
        distributed: under DDP, where the sampler is the distributed one, ``auto`` picks
            the loss.

    Returns:
        ``{"mode": "off"|"loss"|"sampler", "requested": option value, "ratio": float |
        None, "threshold": float, "note": str ("" when nothing to say)}``.

    Raises:
        RecipeError: ``loss`` with mixup/cutmix, or ``sampler`` under DDP.
    """
    threshold = float(threshold or DEFAULT_MAX_IMBALANCE_RATIO)
    ratio = imbalance_ratio(targets, num_classes)
    mixing = options.mixup > 0 or options.cutmix > 0
    requested = options.class_balance
    if requested == "loss" and mixing:
        raise RecipeError("stages.train.class_balance: loss weights do not apply to mixup/cutmix soft targets; "
                          "use sampler, or set mixup and cutmix to 0.")
    if requested == "sampler" and distributed:
        raise RecipeError("stages.train.class_balance: the class-balanced sampler runs in one process; "
                          "use loss with nproc > 1.")
    mode, note = requested, ""
    said = f"{ratio:.1f}" if ratio is not None else "n/a"
    if requested == "auto":
        if ratio is not None and ratio > threshold:
            mode = "sampler" if mixing and not distributed else "loss"
            found = ""
            if audit and audit.get("imbalance_ratio") is not None:
                found = f"the audit found the train split imbalanced (largest/smallest class {audit['imbalance_ratio']:g}); "
            what = "class-weighted loss" if mode == "loss" else "class-balanced sampler"
            note = (f"{found}training images imbalanced {said}x > {threshold:g}x: {what} "
                    f"(stages.train.class_balance: auto; off to disable)")
        else:
            mode = "off"
    elif requested != "off":
        note = f"class balance: {requested} (imbalance {said}x)"
    return {"mode": mode, "requested": requested, "ratio": ratio, "threshold": threshold, "note": note}


def class_weights(targets: Sequence[int], num_classes: int, device: Any = "cpu") -> Any:
    """Per-class loss weights ``n / (K * n_c)`` (scikit-learn's ``class_weight="balanced"``), float32 ``(K,)``.

    A class absent from ``targets`` gets weight 0 (it cannot be predicted from these images anyway).
    """
    import torch

    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32, device=device)
