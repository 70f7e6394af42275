"""Options of the ``train`` stage (``stages.train`` in a recipe) and their checks.

Defaults are chosen to finish quickly on a laptop CPU and to be sound on a GPU; every
default names its source. Validation that needs timm or albumentations (model name,
``train_transform``) runs in :func:`check_options`, called by the stage before any work,
so a typo fails in a second with one sentence naming the option.
"""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from vetset.core.errors import RecipeError
from vetset.core.recipe import Count


class TrainOptions(BaseModel):
    """``stages.train`` options.

    Attributes:
        trainer: trainer name asked of the ``vetset_make_trainer`` hook (``timm`` built in).
        model_name: any ``timm.list_models()`` name (a ``.tag`` suffix is allowed).
            Default ``resnet10t``: 4.9 M parameters, about 1.1 GFLOPs at 224 px, the
            smallest ResNet-D in timm, fast on CPU.
        pretrained: the pretrained tag's weights, as ``timm.create_model(pretrained=True)``
            loads them: from the Hugging Face Hub into the standard cache when online, from
            the cache when not (``HF_HUB_OFFLINE``, ``HF_HOME``, ``HF_HUB_CACHE`` as in
            timm). ``true``: required (one sentence and exit 2 when they cannot be had);
            ``auto``: used when cached or the Hub answers within 3 s, else training from
            scratch, said on the console and in the result; ``false``: random weights. A
            tagged ``model_name`` (``resnet18.a1_in1k``) picks the tag. See
            :mod:`vetset.plugins.train.weights`.
        weights: a local weights file, which wins over ``pretrained``: a ``.safetensors``
            file, a timm/PyTorch state dict (``.pth``/``.bin``/``.pt``, read with
            ``weights_only=True``), or a vetset checkpoint (``<out>/train/best.pt``: its
            backbone is reused, its classifier replaced when the classes differ).
        finetune: ``full`` (every layer trains, after ``head_epochs``) or ``linear_probe``
            (the backbone stays frozen and only the classifier trains, on features
            computed once per image without augmentation: fast on CPU).
        head_epochs: epochs at the start that train only the classifier (backbone frozen,
            its BatchNorm statistics too) before full fine-tuning, so a random new head
            does not send large gradients into pretrained layers. ``None`` = 1 when
            pretrained weights (hub, file or checkpoint) are loaded and ``epochs`` > 2, else 0.
        backbone_lr_scale: the backbone's learning rate as a fraction of ``lr`` (the
            classifier gets ``lr``). ``None`` = 0.1 with pretrained weights (the usual
            10x lower rate for pretrained layers, e.g. Kornblith et al. 2019 "Do Better
            ImageNet Models Transfer Better?"; fast.ai's discriminative rates), 1.0 from
            scratch.
        layer_decay: layer-wise learning-rate decay for
            ``timm.optim.create_optimizer_v2(layer_decay=...)``: layer ``i`` of ``L`` (timm's
            ``group_matcher`` blocks) gets ``lr * layer_decay ** (L - i)``. ``None`` = off:
            for small CNNs timm splits into 10-36 groups, so 0.75 leaves the stem at
            0.075x-0.008x of ``lr``; it suits ViT fine-tuning (BEiT, MAE use 0.65-0.75).
            Combined with ``backbone_lr_scale`` when both are set.
        class_balance: ``auto`` (class-weighted loss when the training images are
            imbalanced beyond the audit's ``max_imbalance_ratio``, default 10; a
            class-balanced sampler instead with mixup/cutmix), ``loss`` (cross-entropy
            weighted ``n / (K * n_c)``, scikit-learn's "balanced"), ``sampler`` (each image
            drawn with probability proportional to ``1 / n_c``, with replacement), or ``off``.
        img_size: square input side in pixels. ``None`` = automatic: with pretrained
            weights from the Hub or a file, the tag's own size from
            ``timm.data.resolve_data_config`` (224 for most ImageNet models; its mean, std,
            interpolation and ``crop_pct`` are used too); with a vetset checkpoint, the size
            it was trained at; from scratch, the data's size: the median
            shorter side of (up to 256 of) the training images, rounded up to a multiple
            of 16, within 32..``max_img_size`` (32 for 8x8 digits or CIFAR, ``max_img_size``
            for photos). See :func:`vetset.plugins.train.model.auto_img_size`.
        max_img_size: upper bound of the automatic ``img_size`` (default 224, the usual
            ImageNet training size; recipes lower it for quick CPU runs).
        epochs: training epochs (the cosine schedule spans them).
        batch_size: images per optimizer step (and per inference batch).
        opt: optimizer name for ``timm.optim.create_optimizer_v2`` (``adamw``, ``sgd``,
            ``lamb``...).
        lr: peak learning rate. Default 1e-3, the usual AdamW rate for batch 32-128
            training from scratch (Loshchilov & Hutter 2019; timm's adamw recipes).
        weight_decay: decoupled weight decay (0.05, timm/DeiT's AdamW default).
        momentum: SGD momentum (ignored by Adam-family optimizers).
        sched: scheduler name for ``timm.scheduler.create_scheduler_v2`` (``cosine``,
            ``step``, ``constant``, ``none``...).
        warmup_epochs: epochs of linear warm-up from ``warmup_lr``.
        warmup_lr: learning rate at the start of warm-up.
        min_lr: floor of the cosine schedule.
        label_smoothing: target smoothing epsilon (0.1, Szegedy et al. 2016, timm's default).
        mixup: mixup alpha; 0 turns mixup off (0.8 in timm's ImageNet recipes).
        cutmix: cutmix alpha; 0 turns cutmix off (1.0 in timm's ImageNet recipes).
        mixup_prob: probability of applying mixup/cutmix to a batch.
        ema: keep a model EMA (``timm.utils.ModelEmaV3``) and validate/save its weights.
        ema_decay: EMA decay per optimizer step.
        clip_grad: clip the global gradient norm to this value; ``None`` = no clipping.
        amp: mixed precision: ``auto`` = bfloat16 on a CUDA device that supports it,
            else float16 on CUDA, off on CPU/MPS; or ``bfloat16``/``float16``/``off``.
        channels_last: use the channels-last memory format on CUDA (faster convolutions
            on tensor cores); ignored on CPU.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        workers: DataLoader worker processes; ``None`` = automatic: on CUDA one per usable
            CPU (at most 8), on CPU a quarter of the CPUs (at most 4; none on 1-3 CPUs, where
            decoding in the training process beats taking a core from the model); 0 decodes
            in the training process.
        threads: CPU threads of the model's operations (``torch.set_num_threads``) during
            training and prediction, restored afterwards; ``None`` keeps torch's setting
            (one per core). On a machine shared with other busy processes, 1 avoids
            OpenMP threads waiting on each other (often several times faster).
        seed: seed of weight init, data order, augmentation and mixup; on CPU two runs
            with the same seed give identical weights.
        train_transform: training-time albumentations pipeline, in ``A.to_dict`` format
            (``{"__version__": ..., "transform": {...}}`` or just the inner
            ``{"__class_fullname__": "Compose", ...}``), or the path of a file written by
            ``A.save`` (``.json``/``.yaml``). Applied after resizing the shorter side to
            ``img_size`` and before the random crop to ``img_size``; it must give back
            ``uint8`` images, so ``ToTensorV2``, ``Normalize`` and ``ToFloat`` are refused
            (vetset scales and normalizes for the model itself).
        early_stopping_patience: stop after this many epochs without improvement of
            ``monitor``; ``None`` = never stop early.
        monitor: ``val_loss`` (lower is better) or ``val_acc`` (higher is better); picks
            the best checkpoint and drives early stopping.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        nproc: training processes on this machine. 1 trains in the run's own process; N > 1
            starts ``torchrun --nproc_per_node=N`` with DistributedDataParallel, one process
            per GPU (NCCL; at most one per CUDA device) or N CPU processes (gloo) when there
            is no GPU or ``device: cpu``. ``batch_size`` is per process, so the effective
            batch is ``N * batch_size`` (timm's convention). ``recipes run --nproc N``
            overrides it. See :mod:`vetset.plugins.train.ddp`.
    """

    model_config = {"extra": "forbid"}

    trainer: str = "timm"
    model_name: str = "resnet10t"
    pretrained: bool | Literal["auto"] = False
    weights: str | None = None
    finetune: Literal["full", "linear_probe"] = "full"
    head_epochs: Count | None = Field(None, ge=0)
    backbone_lr_scale: float | None = Field(None, ge=0, le=1)
    layer_decay: float | None = Field(None, gt=0, le=1)
    class_balance: Literal["auto", "off", "loss", "sampler"] = "auto"
    img_size: Count | None = Field(None, ge=8, le=1024)
    max_img_size: Count = Field(224, ge=16, le=1024)
    epochs: Count = Field(10, ge=1)
    batch_size: Count = Field(64, ge=1)
    opt: str = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    sched: str = "cosine"
    warmup_epochs: Count = Field(1, ge=0)
    warmup_lr: float = Field(1e-5, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)
    cutmix: float = Field(0.0, ge=0)
    mixup_prob: float = Field(1.0, ge=0, le=1)
    ema: bool = False
    ema_decay: float = Field(0.998, gt=0, lt=1)
    clip_grad: float | None = Field(None, gt=0)
    amp: Literal["auto", "bfloat16", "float16", "off"] = "auto"
    channels_last: bool = True
    device: str = "auto"
    workers: Count | None = Field(None, ge=0)
    threads: Count | None = Field(None, ge=1)
    seed: Count = 0
    train_transform: dict[str, Any] | str | None = None
    early_stopping_patience: Count | None = Field(None, ge=1)
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    min_delta: float = Field(0.0, ge=0)
    nproc: Count = Field(1, ge=1)


def as_options(options: Any) -> TrainOptions:
    """A :class:`TrainOptions` from a model, a mapping or ``None`` (defaults).

    Raises:
        RecipeError: a mapping with unknown keys or bad values (the message names them).
    """
    if isinstance(options, TrainOptions):
        return options
    from pydantic import ValidationError

    try:
        return TrainOptions.model_validate(dict(options or {}))
    except ValidationError as exc:
        from vetset.core.recipe import _explain

        raise _explain(exc, TrainOptions, "options", prefix="stages.train.") from None


def check_model_name(name: str) -> None:
    """Raise a :class:`RecipeError` unless ``name`` is a ``timm.list_models()`` name.

    A pretrained tag (``resnet18.a1_in1k``) is accepted; close matches are suggested.
    """
    import timm
    from timm.models import split_model_name_tag

    base, _tag = split_model_name_tag(name)
    if timm.is_model(base):
        return
    close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `python -c \"import timm; print(timm.list_models('*net*'))\"` lists them."
    raise RecipeError(f"stages.train.model_name: {name!r} is not a timm model name{hint}")


def _inner(pipeline: dict[str, Any]) -> dict[str, Any]:
    return pipeline["transform"] if "transform" in pipeline and "__class_fullname__" not in pipeline else pipeline


#: Transforms whose output is not the ``uint8`` ``(H, W, 3)`` array the rest of vetset's train
#: pipeline takes (:func:`vetset.plugins.train.data.build_transforms` pads and crops it, the
#: loop scales and normalizes with the model's mean and std): a tensor, or floats.
NOT_IN_TRAIN_TRANSFORM = ("ToTensorV2", "ToTensor", "ToTensorV3", "Normalize", "ToFloat")


def _find_output_changing(node: Any, where: str) -> str:
    """Describe the first transform of a serialized pipeline in :data:`NOT_IN_TRAIN_TRANSFORM`, or ``""``."""
    if not isinstance(node, dict):
        return ""
    name = str(node.get("__class_fullname__") or "")
    if name.rsplit(".", 1)[-1] in NOT_IN_TRAIN_TRANSFORM:
        return (f"transform {name!r} at {where} turns the image into a tensor or floats; vetset's pipeline needs "
                "uint8 images from train_transform and scales and normalizes them for the model itself, "
                "so leave it out")
    for i, child in enumerate(node.get("transforms") or []):
        bad = _find_output_changing(child, f"{where}.transforms[{i}]")
        if bad:
            return bad
    return ""


def _find_bad(node: dict[str, Any], where: str) -> str:
    """Build each transform of a serialized pipeline alone; describe the first that fails."""
    import albumentations as A

    name = node.get("__class_fullname__") if isinstance(node, dict) else None
    if not name:
        return f"{where} has no __class_fullname__ (is it in A.to_dict format?)"
    for i, child in enumerate(node.get("transforms") or []):
        bad = _find_bad(child, f"{where}.transforms[{i}]")
        if bad:
            return bad
    leaf = {k: v for k, v in node.items() if k != "transforms"}
    if "transforms" in node:
        leaf["transforms"] = []
    try:
        A.from_dict({"transform": leaf})
    except KeyError:
        return f"transform {name!r} at {where} is not a known albumentations transform"
    except Exception as exc:  # albumentations raises pydantic ValidationError/TypeError/ValueError
        first = str(exc).strip().splitlines()
        return f"transform {name!r} at {where} has bad arguments: {' '.join(first[:3])[:300]}"
    return ""


def load_train_transform(spec: dict[str, Any] | str | None) -> Any:
    """Build the ``train_transform`` pipeline, or ``None`` when not set.

    Args:
        spec: ``A.to_dict`` output (or its inner ``transform`` mapping), or a file path
            written by ``A.save`` (``.json``, ``.yaml``/``.yml``).

    Returns:
        An ``A.Compose`` (a single transform is wrapped in one).

    Raises:
        RecipeError: unreadable file, a transform that is unknown or has bad arguments,
            or one of :data:`NOT_IN_TRAIN_TRANSFORM` (``ToTensorV2``, ``Normalize``...); the
            message names the transform and its position.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
        if not path.is_file():
            raise RecipeError(f"stages.train.train_transform: file {path} does not exist.")
        try:
            import json

            import yaml

            text = path.read_text(encoding="utf-8")
            spec = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
        except Exception as exc:
            raise RecipeError(f"stages.train.train_transform: {path} is not valid {fmt}: {exc}.") from None
        if not isinstance(spec, dict):
            raise RecipeError(f"stages.train.train_transform: {path} does not hold an A.to_dict mapping.")
    inner = _inner(spec)
    bad = _find_output_changing(inner, "train_transform")
    if bad:
        raise RecipeError(f"stages.train.train_transform: {bad}.")
    import json

    # albumentations' PyTorch helpers (ToTensorV2) import torch, seconds that `recipes validate`
    # need not spend: left out unless the pipeline names them (deferred: albumentations is heavy)
    from vetset.plugins.augment.pipeline import without_albumentations_pytorch

    needs_torch = any(word in json.dumps(inner, default=str) for word in ("pytorch", "ToTensor"))
    with contextlib.nullcontext() if needs_torch else without_albumentations_pytorch():
        import albumentations as A

        try:
            built = A.from_dict({"transform": inner})
        except Exception:
            bad = _find_bad(inner, "train_transform")
            raise RecipeError(f"stages.train.train_transform: {bad or 'the pipeline cannot be built'}.") from None
    if not isinstance(built, A.BaseCompose):
        built = A.Compose([built])
    return built
