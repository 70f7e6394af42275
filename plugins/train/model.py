"""Building the timm model, its data config, optimizer, scheduler and loss from the options.

Everything here is timm's own machinery: ``timm.create_model``,
``timm.data.resolve_data_config``, ``timm.optim.create_optimizer_v2``,
``timm.scheduler.create_scheduler_v2``, ``timm.data.Mixup``, ``timm.loss``.
Nothing is downloaded: pretrained weights come from a local file or the local cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vetset.core.errors import RecipeError
from vetset.plugins.train.options import TrainOptions, check_model_name


def local_pretrained_file(model_name: str) -> str | None:
    """Path of ``model_name``'s pretrained weights if already on disk, else ``None``.

    Looks in the Hugging Face hub cache (``hf_hub_id`` of timm's pretrained config) and in
    the torch hub checkpoint folder (``url``). Never touches the network.
    """
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:
        cfg = None
    if cfg is None:
        return None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []) + [
                    "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]:
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
        except Exception:  # pragma: no cover - huggingface_hub missing or cache unreadable
            pass
    url = cfg.get("url")
    if url:
        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if cached.is_file():
            return str(cached)
    return None


def create_model(options: TrainOptions, num_classes: int, log: Any = print) -> Any:
    """The timm model for ``options.model_name`` with a ``num_classes`` classifier.

    Weights: ``weights`` (a vetset checkpoint, a state-dict file or ``.safetensors``),
    else with ``pretrained`` the locally cached timm weights, else random initialisation
    seeded with ``options.seed``.

    Raises:
        RecipeError: unknown model name, missing weights file, or ``pretrained`` without
            local weights (nothing is downloaded).
    """
    import timm
    import torch

    from vetset.plugins.train.checkpoint import is_vetset_checkpoint, load_weights_into

    check_model_name(options.model_name)
    torch.manual_seed(options.seed)
    file = None
    if options.weights:
        path = Path(options.weights).expanduser()
        if not path.is_file():
            raise RecipeError(f"stages.train.weights: file {path} does not exist.")
        file = str(path.resolve())
        if path.suffix not in (".safetensors",):
            try:
                obj = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise RecipeError(f"stages.train.weights: {path} cannot be read with weights_only=True: {exc}") from None
            if is_vetset_checkpoint(obj):
                if obj.get("model_name") not in (options.model_name, options.model_name.split(".")[0]):
                    raise RecipeError(f"stages.train.weights: {path} holds a {obj.get('model_name')} checkpoint, "
                                      f"not {options.model_name}.")
                model = timm.create_model(options.model_name, pretrained=False, num_classes=num_classes)
                load_weights_into(model, obj["state_dict"], log=log)
                return model
    elif options.pretrained:
        file = local_pretrained_file(options.model_name)
        if file is None:
            raise RecipeError(
                f"stages.train.pretrained: no local weights for {options.model_name!r} (nothing is downloaded); "
                "set stages.train.weights to a weights file, or pretrained: false.")
    if file is None:
        return timm.create_model(options.model_name, pretrained=False, num_classes=num_classes)
    try:
        return timm.create_model(options.model_name, pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay=dict(file=file))
    except Exception as exc:
        raise RecipeError(f"stages.train.weights: {file} does not fit {options.model_name}: {exc}") from None


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


def data_config_for(model: Any, options: TrainOptions, img_size: int | None = None) -> dict[str, Any]:
    """``timm.data.resolve_data_config`` for the model, with ``img_size`` and ``crop_pct`` 1.0.

    Args:
        model: the timm model (its ``pretrained_cfg`` gives mean, std, interpolation).
        options: uses ``img_size``.
        img_size: overrides ``options.img_size`` (the automatic size).

    Returns:
        JSON-able dict: ``input_size`` ``[3, H, W]``, ``interpolation``, ``mean``/``std``
        (0..1 units, per channel), ``crop_pct``, ``crop_mode``.
    """
    from timm.data import resolve_data_config

    args: dict[str, Any] = {"crop_pct": 1.0}
    size = img_size or options.img_size
    if size:
        args["img_size"] = int(size)
    cfg = resolve_data_config(args=args, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def create_optimizer(model: Any, options: TrainOptions) -> Any:
    """``timm.optim.create_optimizer_v2`` (no weight decay on biases and norm layers).

    Raises:
        RecipeError: unknown optimizer name.
    """
    from timm.optim import create_optimizer_v2, list_optimizers

    if options.opt.lower() not in list_optimizers():
        raise RecipeError(f"stages.train.opt: {options.opt!r} is not a timm optimizer; e.g. adamw, sgd, lamb, adan.")
    return create_optimizer_v2(model, opt=options.opt, lr=options.lr, weight_decay=options.weight_decay,
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


def create_loss(options: TrainOptions, num_classes: int) -> tuple[Any, Any]:
    """``(criterion, mixup_fn)``: timm's loss for the options and its ``Mixup`` (or ``None``).

    With mixup/cutmix, targets become soft (``timm.data.Mixup`` applies the label
    smoothing) and the loss is ``SoftTargetCrossEntropy``; otherwise
    ``LabelSmoothingCrossEntropy`` (or plain cross-entropy when smoothing is 0).
    """
    import torch
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if options.mixup > 0 or options.cutmix > 0:
        mixup = Mixup(mixup_alpha=options.mixup, cutmix_alpha=options.cutmix, prob=options.mixup_prob,
                      label_smoothing=options.label_smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if options.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=options.label_smoothing), None
    return torch.nn.CrossEntropyLoss(), None
