"""Building the timm model, its data config, optimizer, scheduler and loss from the options.

Everything here is timm's own machinery: ``timm.create_model``,
``timm.data.resolve_data_config``, ``timm.optim.create_optimizer_v2``,
``timm.scheduler.create_scheduler_v2``, ``timm.data.Mixup``, ``timm.loss``. Where the
weights come from is :mod:`vetset.plugins.train.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vetset.core.errors import RecipeError
from vetset.plugins.train.options import TrainOptions


def create_model(options: TrainOptions, num_classes: int, log: Any = print) -> Any:
    """The timm model for ``options.model_name`` with a ``num_classes`` classifier (weights as
    :func:`create_model_with_info` loads them)."""
    return create_model_with_info(options, num_classes, log=log)[0]


def create_model_with_info(options: TrainOptions, num_classes: int, log: Any = print) -> tuple[Any, dict[str, Any]]:
    """The timm model and a record of its weights (see :func:`vetset.plugins.train.weights.create_with_weights`).

    Weights: ``weights`` (a vetset checkpoint, a state-dict file or ``.safetensors``),
    else ``pretrained`` (``true``/``auto``) the pretrained tag's weights from the Hub or its
    cache, else random initialisation seeded with ``options.seed``.

    Raises:
        RecipeError: unknown model name, a missing or unfitting weights file, or
            ``pretrained: true`` when the weights cannot be had.
    """
    import torch

    from vetset.plugins.train.weights import create_with_weights

    torch.manual_seed(options.seed)
    return create_with_weights(options.model_name, num_classes, pretrained=options.pretrained,
                               weights=options.weights, log=log)


def auto_img_size(filepaths: Sequence[str], max_size: int = 224, sample: int = 256, seed: int = 0) -> int:
    """Input side for training from scratch, from the images themselves.

    The median shorter side (``min(width, height)``, which EXIF rotation does not change)
    of up to ``sample`` files (a seeded random subset), rounded up to a multiple of 16,
    clipped to ``32..max_size``. Only image headers are read (Pillow opens lazily).

    Returns:
        Pixels, a multiple of 16 unless ``max_size`` is not.
    """
    import numpy as np
    from PIL import Image

    paths = list(filepaths)
    if len(paths) > sample:
        idx = np.random.default_rng(seed).choice(len(paths), size=sample, replace=False)
        paths = [paths[i] for i in sorted(idx)]
    sides = []
    for p in paths:
        try:
            with Image.open(p) as img:
                sides.append(min(img.size))
        except Exception:
            continue
    if not sides:
        return min(max_size, 224)
    side = int(np.ceil(float(np.median(sides)) / 16.0) * 16)
    return int(min(max_size, max(32, side)))


def data_config_for(model: Any, options: TrainOptions, img_size: int | None = None,
                    weights_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """``timm.data.resolve_data_config`` for the model and where its weights came from.

    Pretrained weights (``source`` ``hub``/``hub_cache``/``file``): the tag's own config
    (input size, mean/std, interpolation, ``crop_pct``), ``img_size`` overriding the size.
    A vetset checkpoint: its stored config (mean/std/interpolation, ``crop_pct`` 1.0), at
    ``img_size`` or the size it was trained at. From scratch: ``crop_pct`` 1.0 at ``img_size``.

    Args:
        model: the timm model (its ``pretrained_cfg`` gives mean, std, interpolation).
        options: uses ``img_size``.
        img_size: overrides ``options.img_size`` (the automatic size).
        weights_info: the record of :func:`create_model_with_info`; ``None`` = from scratch.

    Returns:
        JSON-able dict: ``input_size`` ``[3, H, W]``, ``interpolation``, ``mean``/``std``
        (0..1 units, per channel), ``crop_pct``, ``crop_mode``.
    """
    from timm.data import resolve_data_config

    source = (weights_info or {}).get("source", "none")
    size = img_size or options.img_size
    args: dict[str, Any] = {} if source in ("hub", "hub_cache", "file") else {"crop_pct": 1.0}
    stored = (weights_info or {}).get("checkpoint_data_config") if source == "checkpoint" else None
    if stored:
        for key in ("mean", "std", "interpolation"):
            if stored.get(key) is not None:
                args[key] = tuple(stored[key]) if isinstance(stored[key], list) else stored[key]
        size = size or int(stored["input_size"][-1])
    if size:
        args["img_size"] = int(size)
    cfg = resolve_data_config(args=args, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def head_parameter_names(model: Any) -> set[str]:
    """Names of the classifier's parameters (``model.get_classifier()``), as in ``named_parameters``."""
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()} if head is not None else set()
    return {n for n, p in model.named_parameters() if id(p) in ids}


def create_optimizer(model: Any, options: TrainOptions, backbone_lr_scale: float = 1.0) -> Any:
    """``timm.optim.create_optimizer_v2`` over timm's parameter groups, the backbone's rate scaled.

    Groups are timm's: ``param_groups_weight_decay`` (no weight decay on biases, norm
    layers and ``model.no_weight_decay()``), or with ``layer_decay``
    ``param_groups_layer_decay`` (``lr_scale = layer_decay ** (L - layer)``). Each group is
    split into classifier and backbone parameters; the backbone's ``lr_scale`` is
    multiplied by ``backbone_lr_scale``. timm's schedulers set ``lr = value * lr_scale`` per
    group; the initial ``lr`` of each group is set the same way (for ``sched: none``).

    Raises:
        RecipeError: unknown optimizer name.
    """
    from timm.optim import create_optimizer_v2, list_optimizers, param_groups_layer_decay, param_groups_weight_decay

    if options.opt.lower() not in list_optimizers():
        raise RecipeError(f"stages.train.opt: {options.opt!r} is not a timm optimizer; e.g. adamw, sgd, lamb, adan.")
    no_wd = set(getattr(model, "no_weight_decay", lambda: set())())
    if options.layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay=options.weight_decay, no_weight_decay_list=no_wd,
                                          layer_decay=options.layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay=options.weight_decay, no_weight_decay_list=no_wd)
    head_ids = {id(p) for n, p in model.named_parameters() if n in head_parameter_names(model)}
    split = []
    for group in groups:
        params = list(group["params"])
        for is_head in (True, False):
            own = [p for p in params if (id(p) in head_ids) == is_head]
            if not own:
                continue
            scale = float(group.get("lr_scale", 1.0)) * (1.0 if is_head else float(backbone_lr_scale))
            split.append({**group, "params": own, "lr_scale": scale, "lr": options.lr * scale, "is_head": is_head})
    return create_optimizer_v2(split, opt=options.opt, lr=options.lr, weight_decay=options.weight_decay,
                               momentum=options.momentum)


def create_scheduler(optimizer: Any, options: TrainOptions, updates_per_epoch: int) -> Any:
    """``timm.scheduler.create_scheduler_v2`` stepped per optimizer update.

    Warm-up is capped at ``epochs - 1`` so a short run still decays.

    Returns:
        The scheduler, or ``None`` for ``sched: none``.

    Raises:
        RecipeError: unknown scheduler name.
    """
    from timm.scheduler import create_scheduler_v2

    known = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "plateau", "none")
    if options.sched not in known:
        raise RecipeError(f"stages.train.sched: {options.sched!r} is not one of {', '.join(known)}.")
    if options.sched == "none":
        return None
    warmup = min(options.warmup_epochs, max(0, options.epochs - 1))
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=options.sched, num_epochs=options.epochs, warmup_epochs=warmup,
        warmup_lr=options.warmup_lr, min_lr=options.min_lr, step_on_epochs=False,
        updates_per_epoch=max(1, updates_per_epoch), plateau_mode="min")
    return scheduler


def create_loss(options: TrainOptions, num_classes: int, weight: Any = None) -> tuple[Any, Any]:
    """``(criterion, mixup_fn)``: timm's loss for the options and its ``Mixup`` (or ``None``).

    With mixup/cutmix, targets become soft (``timm.data.Mixup`` applies the label
    smoothing) and the loss is ``SoftTargetCrossEntropy``; otherwise
    ``LabelSmoothingCrossEntropy`` (or plain cross-entropy when smoothing is 0). With
    per-class ``weight`` (float tensor ``(K,)``, ``class_balance: loss``) it is
    ``torch.nn.CrossEntropyLoss(weight=..., label_smoothing=...)``; mixup cannot be combined
    with it (``class_balance`` picks the sampler then).
    """
    import torch
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if weight is not None and not (options.mixup > 0 or options.cutmix > 0):
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=options.label_smoothing), None
    if options.mixup > 0 or options.cutmix > 0:
        mixup = Mixup(mixup_alpha=options.mixup, cutmix_alpha=options.cutmix, prob=options.mixup_prob,
                      label_smoothing=options.label_smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if options.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=options.label_smoothing), None
    return torch.nn.CrossEntropyLoss(), None
